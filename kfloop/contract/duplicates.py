"""Duplicate detection across batches in bounded memory: 24 bytes per row, not the rows themselves.

Pass 1 feeds each batch's key hash, whole-row hash and event time to :class:`DuplicateIndex`;
:meth:`DuplicateIndex.resolve` then decides which global row positions to drop for the configured mode,
and pass 2 applies that mask batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from kfloop.config.contract import Duplicates


@dataclass(frozen=True)
class DuplicateOutcome:
    """What was found and what to drop (a mask over global row positions)."""

    exact: int  # rows identical to an earlier row
    key_conflicts: int  # rows sharing a key with another row but differing in values
    drop: np.ndarray  # bool per row: removed from the clean output

    @property
    def duplicates(self) -> int:
        return self.exact + self.key_conflicts


def _hash(df: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(df, index=False).to_numpy(dtype=np.uint64)


#: Nullable pandas dtypes, so a batch with a null int/bool column hashes like a batch without one
#: (plain ``to_pandas`` turns such a column into float64/object in that batch only).
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_NULLABLE.get)


class DuplicateIndex:
    """Collects hashes batch by batch."""

    def __init__(self, cfg: Duplicates, timestamp_column: str) -> None:
        self.cfg = cfg
        self.ts = timestamp_column
        self._keys: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._times: list[np.ndarray] = []

    def add(self, table: pa.Table) -> None:
        df = _frame(table)
        self._keys.append(_hash(df[list(self.cfg.keys)]))
        self._rows.append(_hash(df))
        self._times.append(df[self.ts].to_numpy(dtype="datetime64[us]").astype(np.int64))

    def resolve(self) -> DuplicateOutcome:
        keys = np.concatenate(self._keys) if self._keys else np.array([], np.uint64)
        rows = np.concatenate(self._rows) if self._rows else np.array([], np.uint64)
        times = np.concatenate(self._times) if self._times else np.array([], np.int64)
        n = len(keys)
        pos = np.arange(n)
        # exact duplicates: the same whole row seen earlier
        order = np.lexsort((pos, rows, keys))
        same_as_prev = np.zeros(n, dtype=bool)
        same_as_prev[order[1:]] = (keys[order[1:]] == keys[order[:-1]]) & (rows[order[1:]] == rows[order[:-1]])
        exact = int(same_as_prev.sum())
        # key groups among the distinct rows
        distinct = ~same_as_prev
        k = keys[distinct]
        _, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
        conflicts_mask = np.zeros(n, dtype=bool)
        conflicts_mask[np.flatnonzero(distinct)] = counts[inverse] > 1
        # every member of a conflicting key group beyond the one kept is a conflict
        key_conflicts = int(conflicts_mask.sum() - (counts > 1).sum())
        drop = same_as_prev.copy()
        if self.cfg.mode == "fail":
            drop[:] = False
        else:
            keep = self._keep(keys, times, pos, distinct)
            drop |= distinct & ~keep
        return DuplicateOutcome(exact=exact, key_conflicts=key_conflicts, drop=drop)

    def _keep(self, keys: np.ndarray, times: np.ndarray, pos: np.ndarray, distinct: np.ndarray) -> np.ndarray:
        """One row per key: the first seen (``drop``) or the latest by event time, ties to the last seen."""
        idx = np.flatnonzero(distinct)
        if self.cfg.mode == "drop":
            order = np.lexsort((pos[idx], keys[idx]))
            first = np.ones(len(order), dtype=bool)
            first[1:] = keys[idx][order[1:]] != keys[idx][order[:-1]]
        else:
            order = np.lexsort((-pos[idx], -times[idx], keys[idx]))
            first = np.ones(len(order), dtype=bool)
            first[1:] = keys[idx][order[1:]] != keys[idx][order[:-1]]
        keep = np.zeros(len(keys), dtype=bool)
        keep[idx[order[first]]] = True
        return keep
