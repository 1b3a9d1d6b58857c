"""Stream records → the rows the batch stages would keep: the same cast, lateness and contract, per batch.

Why: the online values must equal what the batch stages compute from the same events, so a record counts online
only if ingest would store it (it parses as a JSON object and casts to the source's columns, and is not too late
for the lake's watermark) and validate would keep it clean (no quarantine-severity check fails). The archived
records go through ingest itself (:mod:`kfloop.stream.archive`), which quarantines the rest with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.cast import REASON_COLUMN, ROW_COLUMN
from kfloop.config import Config
from kfloop.contract.checks import RowCheck, row_checks
from kfloop.derive import cast_and_derive
from kfloop.late_rows import LakeRows
from kfloop.row_hash import row_hashes
from kfloop.sources.readers import Reject, records_to_batch

#: How many of a batch's skipped records the worker logs with their reasons (the rest are counted).
LOGGED_REASONS = 5


class Message(NamedTuple):
    """One stream record: its id in the stream (Redis entry id, Kafka ``partition:offset``) and its payload. A
    tuple of a str and bytes, which the cyclic garbage collector stops tracking: a worker holds up to
    ``stream.archive_rows`` of them, and tracked objects make every full collection (a pause) longer."""

    id: str
    payload: bytes


@dataclass(frozen=True)
class Checked:
    """A batch of records checked like ingest + validate would check them."""

    clean: pa.Table  # typed rows of the lake schema that validate would keep clean
    event_ids: list[str]  # per clean row: the contract's duplicate key, or the row's content hash
    skipped: dict[str, int]  # reason kind → records (unreadable, mistyped, too_late, contract, already_ingested)
    examples: list[str]  # the first few reasons, for the log
    refused: frozenset[int] = frozenset()  # positions of records ingest must not store (unreadable, mistyped, too late)


def event_ids(table: pa.Table, config: Config) -> list[str]:
    """What makes two deliveries one event: the contract's duplicate keys (``contract.duplicates.keys``) when
    declared, else the whole row's content (an exact re-delivery)."""
    dups = config.contract.duplicates
    if dups is None:
        return [f"{h:016x}" for h in row_hashes(table).tolist()]
    cols = [table.column(k).to_pylist() for k in dups.keys]
    return [orjson.dumps(list(values), default=str).decode() for values in zip(*cols, strict=True)]


def _decode(messages: Sequence[Message]) -> tuple[list[dict], list[int], list[Reject]]:
    records, rows, rejects = [], [], []
    for i, m in enumerate(messages):
        try:
            rec = orjson.loads(m.payload)
        except orjson.JSONDecodeError as err:
            rejects.append(Reject(i, m.payload.decode("utf-8", "replace"), f"invalid JSON: {err}"))
            continue
        if not isinstance(rec, dict):
            rejects.append(Reject(i, m.payload.decode("utf-8", "replace"), "not a JSON object"))
            continue
        records.append(rec)
        rows.append(i)
    return records, rows, rejects


class RecordChecker:
    """Checks batches against the lake as of the last archive (``refresh`` after each one)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        src = config.source
        self.required = (src.timestamp_column, *src.entity_keys)
        self.checks: list[RowCheck] = [
            c for c in row_checks(config.contract, src.timezone) if c.severity == "quarantine"
        ]
        self.late: LakeRows | None = None

    def refresh(self, late: LakeRows | None) -> None:
        """The lake's committed rows and watermark that decide what is late, already ingested or too late."""
        self.late = late

    def check(self, messages: Sequence[Message]) -> Checked:
        src = self.config.source
        records, rows, rejects = _decode(messages)
        skipped = {"unreadable": len(rejects)}
        examples = [f"record {messages[r.row].id}: {r.reason}" for r in rejects[:LOGGED_REASONS]]
        raw = records_to_batch(records, rows, src, [])
        cast = cast_and_derive(raw.table, src, raw.rows, self.required)
        skipped["mistyped"] = cast.bad.num_rows
        examples += [f"record {messages[int(r[ROW_COLUMN])].id}: {r[REASON_COLUMN]}" for r in cast.bad.to_pylist()[:3]]
        good = cast.good
        refused = {r.row for r in rejects} | set(cast.bad.column(ROW_COLUMN).to_pylist())
        if self.late is not None and good.num_rows:
            split = self.late.split(good)
            skipped["too_late"] = split.too_late.num_rows
            skipped["already_ingested"] = split.skipped
            if split.too_late.num_rows:  # their positions: the good rows with a too-late row's content
                late = set(row_hashes(split.too_late).tolist())
                good_rows = pc.filter(
                    raw.rows,
                    pc.invert(
                        pc.is_in(raw.rows, value_set=cast.bad.column(ROW_COLUMN).combine_chunks().cast(pa.int64()))
                    ),
                ).to_pylist()
                refused |= {p for p, h in zip(good_rows, row_hashes(good).tolist(), strict=True) if h in late}
            good = split.keep
        bad = np.zeros(good.num_rows, dtype=bool)
        for c in self.checks:
            failed = c.evaluate(good)
            if failed.any() and len(examples) < LOGGED_REASONS * 2:
                examples.append(f"{int(failed.sum())} record(s) fail {c.check}: {c.message}")
            bad |= failed
        skipped["contract"] = int(bad.sum())
        clean = good.filter(pa.array(~bad)) if bad.any() else good
        kept = {k: v for k, v in skipped.items() if v}
        return Checked(clean, event_ids(clean, self.config), kept, examples, frozenset(refused))
