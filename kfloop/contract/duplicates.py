"""Duplicate detection across batches in bounded memory: 17 bytes per row, not the rows themselves.

Pass 1 feeds each batch's key columns and event time to :class:`DuplicateIndex`; :meth:`plan` decides
which global row positions to drop for the configured mode. Pass 2 shows the plan the full rows of
the keys that repeat (usually few), so it can tell exact duplicates from key conflicts. Keys and rows are
hashed from the Arrow buffers (:mod:`kfloop.contract.arrow_hash`); the plan sorts only the repeated keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from kfloop.config.contract import Duplicates
from kfloop.contract.arrow_hash import row_hashes as _hash


@dataclass(frozen=True)
class DuplicateOutcome:
    """What was found and what to drop (a mask over global row positions)."""

    exact: int  # rows identical to an earlier row
    key_conflicts: int  # rows sharing a key with another row but differing in values
    drop: np.ndarray  # bool per row: removed from the clean output

    @property
    def duplicates(self) -> int:
        return self.exact + self.key_conflicts


@dataclass
class DuplicatePlan:
    """The drop decision, plus the exact/conflict split filled in from pass 2."""

    drop: np.ndarray
    repeated: np.ndarray  # bool per row: its key occurs more than once
    keys: np.ndarray
    groups: int  # keys that occur more than once
    _pairs: list[np.ndarray] = field(default_factory=list)

    def count(self, table: pa.Table, offset: int) -> None:
        """Hash the full rows of repeated keys in this batch (rows ``offset`` … ``offset + n``)."""
        sel = self.repeated[offset : offset + table.num_rows]
        if sel.any():
            row_hashes = _hash(table.filter(pa.array(sel)))
            key_hashes = self.keys[offset : offset + table.num_rows][sel]
            self._pairs.append(np.stack([key_hashes, row_hashes], axis=1))

    def outcome(self) -> DuplicateOutcome:
        pairs = np.concatenate(self._pairs) if self._pairs else np.empty((0, 2), np.uint64)
        exact = len(pairs) - len(np.unique(pairs, axis=0)) if len(pairs) else 0
        total = int(self.repeated.sum()) - self.groups
        return DuplicateOutcome(exact=exact, key_conflicts=total - exact, drop=self.drop)


class DuplicateIndex:
    """Collects key hashes and event times batch by batch."""

    def __init__(self, cfg: Duplicates, timestamp_column: str) -> None:
        self.cfg = cfg
        self.ts = timestamp_column
        self._keys: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._null_keys: list[np.ndarray] = []

    def add(self, table: pa.Table) -> None:
        """Record a batch (only the key columns and the event time are read)."""
        keys = table.select(list(self.cfg.keys))
        self._keys.append(_hash(keys))
        nulls = np.zeros(table.num_rows, dtype=bool)
        for col in keys.columns:
            if col.null_count:
                nulls |= np.asarray(col.is_null())
        self._null_keys.append(nulls)
        ts = table.column(self.ts).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        self._times.append(ts.to_numpy(zero_copy_only=False))

    def plan(self) -> DuplicatePlan:
        """One row kept per key: the first seen (``drop``), the latest by event time with ties to the last
        seen (``keep_latest``), the last seen whatever its event time (``keep_last_ingested``: lake rows are
        read in ingest order, so a re-sent row with a label now known replaces the earlier one), or none
        dropped (``fail``)."""
        keys = np.concatenate(self._keys) if self._keys else np.array([], np.uint64)
        times = np.concatenate(self._times) if self._times else np.array([], np.int64)
        n = len(keys)
        # a row with a missing key duplicates nothing: give it a key of its own (nullability is another check)
        null_keys = np.concatenate(self._null_keys) if self._null_keys else np.zeros(0, dtype=bool)
        if null_keys.any():
            keys = keys.copy()
            keys[null_keys] = np.uint64(2**63) + np.flatnonzero(null_keys).astype(np.uint64)
            keys[~null_keys] %= np.uint64(2**63)
        # one hash-table pass finds the keys seen more than once; only those rows are sorted
        repeated = pd.Series(keys, copy=False).duplicated(keep=False).to_numpy()
        pos = np.flatnonzero(repeated)
        sub_keys, sub_times = keys[pos], times[pos]
        if self.cfg.mode == "keep_latest":
            order = np.lexsort((-pos, -sub_times, sub_keys))
        elif self.cfg.mode == "keep_last_ingested":
            order = np.lexsort((-pos, sub_keys))
        else:
            order = np.lexsort((pos, sub_keys))
        sorted_keys = sub_keys[order]
        first = np.ones(len(pos), dtype=bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        drop = np.zeros(n, dtype=bool)
        if self.cfg.mode != "fail":
            drop[pos[order[~first]]] = True
        groups = int(first.sum())  # every key left repeats: one group per first row
        return DuplicatePlan(drop=drop, repeated=repeated, keys=keys, groups=groups)

    def resolve(self, tables: list[pa.Table]) -> DuplicateOutcome:
        """Plan and count in one go, for data already in memory (tests, small inputs)."""
        plan = self.plan()
        offset = 0
        for table in tables:
            plan.count(table, offset)
            offset += table.num_rows
        return plan.outcome()
