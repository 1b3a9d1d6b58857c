"""Deliberate data-quality defects, injected with known ground truth.

Why: contract and data-quality checks need inputs whose faults are known row by row, so tests can
assert that every injected defect is caught (and nothing else is flagged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

DEFECT_KINDS: tuple[str, ...] = ("nulls", "duplicates", "wrong_types", "out_of_range", "unknown_categories")
NULLABLE_COLUMNS: tuple[str, ...] = ("amount", "merchant_category", "channel", "distance_from_home_km")
NUMERIC_COLUMNS: tuple[str, ...] = ("amount", "distance_from_home_km")
WRONG_TYPE_VALUES: tuple[str, ...] = ("n/a", "12,5x", "unknown", "1.2.3", "#REF!", "--")
UNKNOWN_CATEGORIES: tuple[str, ...] = ("crypto_exchange", "gambling", "GROCERY", "misc")
UNKNOWN_CHANNELS: tuple[str, ...] = ("phone", "mail_order", "POS", "kiosk")


@dataclass(frozen=True)
class DefectSpec:
    """Rate in [0, 1) of rows affected by each defect kind; each kind hits round(rate * rows) rows."""

    nulls: float = 0.0
    duplicates: float = 0.0
    wrong_types: float = 0.0
    out_of_range: float = 0.0
    unknown_categories: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            rate = getattr(self, f.name)
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"defect rate {f.name}={rate!r} must be a number in [0, 1)")
            if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
                raise ValueError(f"defect rate {f.name}={rate!r} must be in [0, 1)")

    @property
    def any(self) -> bool:
        """True when at least one kind has a positive rate."""
        return any(getattr(self, kind) > 0 for kind in DEFECT_KINDS)

    def counts(self, rows: int) -> dict[str, int]:
        """Exact number of rows each kind affects for a frame of ``rows`` clean rows."""
        return {kind: round(getattr(self, kind) * rows) for kind in DEFECT_KINDS}

    @classmethod
    def parse(cls, text: str) -> DefectSpec:
        """Parse a CLI string like ``"nulls=0.01,duplicates=0.005"`` (empty or "none" → no defects; "demo" → the
        demo's mix, :data:`DEMO_DEFECTS`)."""
        if text.strip().lower() in ("", "none"):
            return cls()
        if text.strip().lower() == "demo":
            return cls.parse(DEMO_DEFECTS)
        rates: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq:
                raise ValueError(f"defects {text!r}: part {part!r} is not NAME=RATE")
            if name not in DEFECT_KINDS:
                raise ValueError(f"defects {text!r}: unknown defect {name!r} (known: {', '.join(DEFECT_KINDS)})")
            if name in rates:
                raise ValueError(f"defects {text!r}: defect {name!r} given twice")
            try:
                rates[name] = float(value)
            except ValueError as err:
                raise ValueError(f"defects {text!r}: rate {value.strip()!r} for {name!r} is not a number") from err
        return cls(**rates)


#: The demo's defects: a few of each kind, so the contract has rows to quarantine and duplicates to drop.
DEMO_DEFECTS = "nulls=0.002,duplicates=0.002,wrong_types=0.001,out_of_range=0.001,unknown_categories=0.001"


def inject_defects(
    frame: pd.DataFrame, spec: DefectSpec, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Return a defective copy of ``frame`` and, per kind, the transaction_ids affected.

    Each kind hits its own disjoint set of clean rows, so the ground truth is unambiguous; duplicates
    are exact copies placed right after their original (the frame stays sorted by event time).
    """
    n = len(frame)
    counts = spec.counts(n)
    if sum(counts.values()) > n:
        raise ValueError(f"defect rates {counts} add up to more rows than the {n} generated")
    out = frame.reset_index(drop=True).copy()
    perm = rng.permutation(n)
    chosen: dict[str, np.ndarray] = {}
    pos = 0
    for kind in DEFECT_KINDS:
        chosen[kind] = np.sort(perm[pos : pos + counts[kind]])
        pos += counts[kind]
    _wrong_types(out, chosen["wrong_types"], rng)
    _nulls(out, chosen["nulls"], rng)
    _out_of_range(out, chosen["out_of_range"], rng)
    _unknown_categories(out, chosen["unknown_categories"], rng)
    ids = out["transaction_id"].to_numpy()
    injected = {kind: ids[rows].tolist() for kind, rows in chosen.items()}
    if len(chosen["duplicates"]):
        out = pd.concat([out, out.iloc[chosen["duplicates"]]], ignore_index=True)
        out = out.sort_values("event_timestamp", kind="stable", ignore_index=True)
    return out, injected


def _set(frame: pd.DataFrame, rows: np.ndarray, column: str, values: object) -> None:
    frame.iloc[rows, frame.columns.get_loc(column)] = values


def _split(rng: np.random.Generator, rows: np.ndarray, options: int) -> list[np.ndarray]:
    """Assign each row one of ``options`` variants at random; returns the rows of each variant."""
    pick = rng.integers(0, options, len(rows))
    return [rows[pick == i] for i in range(options)]


def _wrong_types(frame: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator) -> None:
    for column, hit in zip(NUMERIC_COLUMNS, _split(rng, rows, len(NUMERIC_COLUMNS)), strict=True):
        if len(hit):
            frame[column] = frame[column].astype(object)
            bad = np.array(WRONG_TYPE_VALUES, dtype=object)[rng.integers(0, len(WRONG_TYPE_VALUES), len(hit))]
            _set(frame, hit, column, bad)


def _nulls(frame: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator) -> None:
    for column, hit in zip(NULLABLE_COLUMNS, _split(rng, rows, len(NULLABLE_COLUMNS)), strict=True):
        if len(hit):
            _set(frame, hit, column, np.nan if frame[column].dtype.kind == "f" else None)


def _out_of_range(frame: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator) -> None:
    amount, hour, distance = _split(rng, rows, 3)
    for column, hit in (("amount", amount), ("distance_from_home_km", distance)):
        if len(hit):
            clean = frame[column].to_numpy()[hit].astype(np.float64)
            _set(frame, hit, column, -np.maximum(np.abs(clean), 0.01))
    if len(hour):
        _set(frame, hour, "hour_of_day", rng.integers(24, 31, len(hour)))


def _unknown_categories(frame: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator) -> None:
    category, channel = _split(rng, rows, 2)
    for column, hit, vocab in (
        ("merchant_category", category, UNKNOWN_CATEGORIES),
        ("channel", channel, UNKNOWN_CHANNELS),
    ):
        if len(hit):
            _set(frame, hit, column, np.array(vocab, dtype=object)[rng.integers(0, len(vocab), len(hit))])
