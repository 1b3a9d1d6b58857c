"""The soak's data: one new batch of tiny demo transactions per run, and what each row must look like in the lake.

Each batch is the demo generator's data for the next ``BATCH_DAYS`` of its lane (so a lane's lake only grows
forward in time), with transaction ids made unique across the whole soak and a fraud label on every
``FRAUD_EVERY``-th row (every test split then holds both classes, so the evaluation gate can always judge).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from kfloop.demo import DemoSpec, generate, write_frame

START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH_DAYS = 2  # few partitions (event dates) per batch: the lake's file count grows slowly
CUSTOMERS, MERCHANTS = 20, 10  # few entities: every batch updates most of them (online rows get replaced)
FRAUD_EVERY = 12
#: The source columns a row hash covers: all of them.
COLUMNS = (
    "transaction_id",
    "customer_id",
    "merchant_id",
    "event_timestamp",
    "amount",
    "merchant_category",
    "channel",
    "distance_from_home_km",
    "hour_of_day",
    "is_fraud",
)


@dataclass(frozen=True)
class Batch:
    """One run's source file and, per transaction id, the hash of the row as generated."""

    run: int
    seq: int  # the batch's place in its lane
    path: Path
    rows: dict[str, str]  # transaction_id → row hash


def row_hashes(frame: pd.DataFrame) -> dict[str, str]:
    """transaction_id → SHA-256 of the row's values (timestamps as UTC microseconds, floats by repr)."""
    ts = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]").astype("int64")
    parts = [frame[c].map(repr) if c != "event_timestamp" else ts.map(str) for c in COLUMNS]
    text = parts[0].str.cat(parts[1:], sep="|")
    return {tx: hashlib.sha256(t.encode()).hexdigest() for tx, t in zip(frame["transaction_id"], text, strict=True)}


def plain_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The source columns as plain Python-typed values, the way the generator's frame holds them."""
    out = frame[list(COLUMNS)].copy()
    for c in ("transaction_id", "customer_id", "merchant_id", "merchant_category", "channel"):
        out[c] = out[c].astype(object)
    for c in ("hour_of_day", "is_fraud"):
        out[c] = out[c].astype("int64")
    for c in ("amount", "distance_from_home_km"):
        out[c] = out[c].astype("float64")
    return out


def make_batch(run: int, seq: int, rows: int, out_dir: Path, seed: int) -> Batch:
    """Generate and write (CSV, atomically) the batch of ``run``, the ``seq``-th of its lane."""
    spec = DemoSpec(
        rows=rows,
        seed=seed * 100_003 + run,
        start=START + timedelta(days=BATCH_DAYS * seq),
        days=BATCH_DAYS,
        customers=CUSTOMERS,
        merchants=MERCHANTS,
    )
    frame = generate(spec).frame
    frame["transaction_id"] = [f"tx-{run:05d}{i:06d}" for i in range(len(frame))]
    frame.loc[frame.index % FRAUD_EVERY == 0, "is_fraud"] = 1
    path = out_dir / f"batch-{run:05d}.csv"
    write_frame(frame, path, "csv")
    return Batch(run, seq, path, row_hashes(plain_frame(frame)))
