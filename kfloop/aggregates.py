"""Point-in-time rolling aggregates per entity: the pure, vectorized engine of the feature stage.

Why: Feast stores and serves features but does not compute windowed aggregates over a batch. The
feature stage computes them here once, so training rows and the online store see the same values.
Every window is trailing and includes the row's own instant, ``(t - window, t]``, so a value never
depends on a later event; a column known only after its event (``source.available_after``, or the
label's ``label_delay``) counts from the time it is known. One sort by (entity, time), window bounds by
``np.searchsorted`` on an int64 key, per-entity prefix sums for count/sum/mean, a sparse table for
min/max and a difference array for count_distinct keep the whole stage O(n log n) in numpy, exact at
microsecond resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.config.availability import Availability, known_after
from kfloop.config.contract import parse_duration
from kfloop.config.features import (
    FEATURE_TIMESTAMP,
    TIME_SINCE_PREVIOUS,
    Aggregate,
    FeatureViewSpec,
    feature_name,
)

__all__ = ["TIMESTAMP_TYPE", "compute_view"]

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MAX_KEY = 2**62  # int64 search keys stay below this


def _micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC (as in the demo generator)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _US


def _numpy(array: pa.Array, fill: float | int) -> tuple[np.ndarray, np.ndarray]:
    """Values with nulls replaced by ``fill``, plus the validity mask."""
    valid = np.asarray(pc.is_valid(array).to_numpy(zero_copy_only=False), dtype=bool)
    return pc.fill_null(array, fill).to_numpy(zero_copy_only=False), valid


class _Index:
    """Rows sorted by (entity, time): finds window bounds for many (entity, time) queries at once.

    Times are rebased per entity so the int64 key ``entity * span + offset`` stays small; when even
    that would overflow (very many entities x long history) the search runs over batches of entities.
    """

    def __init__(self, group: np.ndarray, ts: np.ndarray, n_groups: int) -> None:
        self.n_groups = n_groups
        self.start = np.searchsorted(group, np.arange(n_groups + 1))  # group g: rows [start[g], start[g+1])
        self.gmin = ts[self.start[:-1]]
        offset = ts - self.gmin[group]
        self.span = int(offset.max()) + 2
        self.per = max(1, _MAX_KEY // self.span - 1)  # entities per search batch
        self.key = (group % self.per) * self.span + offset + 1

    def after(self, group: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Index of the first row of ``group`` with time > ``t`` (queries sorted by group)."""
        rel = np.clip(t - self.gmin[group] + 1, 0, self.span - 1)
        qkey = (group % self.per) * self.span + rel
        out = np.empty(len(group), dtype=np.int64)
        for g0 in range(0, self.n_groups, self.per):
            g1 = min(g0 + self.per, self.n_groups)
            a, b = self.start[g0], self.start[g1]
            qa, qb = np.searchsorted(group, [g0, g1])
            out[qa:qb] = a + np.searchsorted(self.key[a:b], qkey[qa:qb], side="right")
        return out


def _entity_cumsum(values: np.ndarray, group: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each entity, so a window sum depends only on that
    entity's own rows (bit-for-bit, whatever other entities the batch holds) and stays small.

    Entities of similar size (up to the same power of two) are padded into one matrix whose rows
    numpy accumulates sequentially: no Python loop over entities, at most 2x memory.
    """
    sizes = np.diff(start)
    bits = np.frexp((sizes - 1).astype(np.float64))[1]  # 2**bits >= size
    row_bits = bits[group]
    out = np.empty_like(values)
    for b in np.unique(bits):
        rows = np.flatnonzero(row_bits == b)
        groups = np.flatnonzero(bits == b)
        i, j = np.searchsorted(groups, group[rows]), rows - start[group[rows]]
        matrix = np.zeros((len(groups), 1 << int(b)))
        matrix[i, j] = values[rows]
        out[rows] = np.cumsum(matrix, axis=1)[i, j]
    return out


def _extreme(values: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray, fn: str) -> np.ndarray:
    """Min or max over rows [lo, hi) by a sparse table, built only up to the longest window."""
    op = np.minimum if fn == "min" else np.maximum
    level = np.where(valid, values, np.inf if fn == "min" else -np.inf)
    length = hi - lo
    nonempty = length > 0
    k = np.zeros(len(lo), dtype=np.int64)
    k[nonempty] = np.frexp(length[nonempty].astype(np.float64))[1] - 1  # exact floor(log2)
    out = np.full(len(lo), np.nan)
    for lv in range(int(k.max(initial=0)) + 1):  # level[i] = op over rows [i, i + 2**lv)
        sel = np.flatnonzero(nonempty & (k == lv))
        out[sel] = op(level[lo[sel]], level[hi[sel] - (1 << lv)])
        level = op(level[: -(1 << lv)], level[1 << lv :])
    return out


def _next_same(codes: np.ndarray, group: np.ndarray, group_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows (code >= 0) and, for each, the next row of its entity with the same value (else group end)."""
    rows = np.flatnonzero(codes >= 0)
    order = rows[np.lexsort((rows, codes[rows], group[rows]))]
    nxt = group_end[group[order]].copy()
    same = (group[order[1:]] == group[order[:-1]]) & (codes[order[1:]] == codes[order[:-1]])
    nxt[:-1][same] = order[1:][same]
    result = np.empty(len(codes), dtype=np.int64)
    result[order] = nxt
    return rows, result[rows]


def _distinct(rows: np.ndarray, nxt: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distinct values in [lo, hi) = rows j there whose value does not recur before hi (nxt[j] >= hi).

    Because lo and hi never decrease along the sorted queries, the queries a row j counts for form
    one contiguous range; adding +1/-1 at its ends and a cumulative sum counts all of them at once.
    """
    m = len(lo)
    first = np.searchsorted(hi, rows, side="right")  # hi > j
    stop = np.minimum(np.searchsorted(hi, nxt, side="right"), np.searchsorted(lo, rows, side="right"))
    ok = stop > first
    diff = np.bincount(first[ok], minlength=m + 1) - np.bincount(stop[ok], minlength=m + 1)
    return np.cumsum(diff)[:m].astype(np.int64)


def _aggregate(
    agg: Aggregate,
    column: pa.Array,
    group: np.ndarray,
    index: _Index,
    qgroup: np.ndarray,
    qt: np.ndarray,
    delay_us: int,
    own_hi: np.ndarray | None,
) -> dict[str, pa.Array]:
    """All ``agg`` features at the query (entity, time) pairs, sorted by both, over rows sorted by (entity, the
    time each value is known); ``own_hi``: the end of each query's window when that is its own row (no delay)."""
    out: dict[str, pa.Array] = {}
    first = index.start[qgroup]  # the entity's first row
    numeric = {"sum", "mean", "min", "max"} & set(agg.functions)
    if numeric:
        values, valid = _numpy(pc.cast(column, pa.float64()), 0.0)
        valid &= ~np.isnan(values)
        values = np.where(valid, values, 0.0)
        n_valid = np.concatenate([[0], np.cumsum(valid)])
        running = _entity_cumsum(values, group, index.start)
    if "count_distinct" in agg.functions:
        codes, _ = _numpy(pc.dictionary_encode(column).indices, -1)
        rows, nxt = _next_same(codes.astype(np.int64), group, index.start[1:])
    for window in agg.windows:
        w = parse_duration(window) // _US
        if delay_us or own_hi is None:
            lo, hi = index.after(qgroup, qt - delay_us - w), index.after(qgroup, qt - delay_us)
        else:
            lo, hi = index.after(qgroup, qt - w), own_hi
        if numeric:
            count = n_valid[hi] - n_valid[lo]
            empty = count == 0
        for fn in agg.functions:
            name = feature_name(agg.column, fn, window)
            if fn == "count":
                out[name] = pa.array(hi - lo, pa.int64())
            elif fn == "count_distinct":
                out[name] = pa.array(_distinct(rows, nxt, lo, hi), pa.int64())
            elif fn in ("sum", "mean"):
                s = np.where(empty, 0.0, running[hi - 1] - np.where(lo > first, running[lo - 1], 0.0))
                out[name] = pa.array(s if fn == "sum" else s / np.maximum(count, 1), pa.float64(), mask=empty)
            else:
                out[name] = pa.array(_extreme(values, valid, lo, hi, fn), pa.float64(), mask=empty)
    return out


def _known_order(
    at: pa.ChunkedArray, order: np.ndarray, group: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted rows re-sorted by (entity, the time their value is known): the ``at`` column's time, never
    before the row's own event. Null (not known yet) or later than every event: past every query, in no window."""
    col = at.combine_chunks()
    if col.type != TIMESTAMP_TYPE:
        col = pc.cast(col, TIMESTAMP_TYPE)
    raw, valid = _numpy(col.cast(pa.int64()), 0)
    never = int(ts.max()) + 1
    known = np.where(valid[order], np.minimum(np.maximum(raw[order], ts), never), never)
    sub = np.lexsort((known, group))  # stable: rows known at one instant keep their (time, value) order
    return sub, known[sub]


def compute_view(
    table: pa.Table,
    view: FeatureViewSpec,
    timestamp_column: str,
    label_delay: timedelta,
    since: datetime | None = None,
    available_after: Mapping[str, Availability] | None = None,
) -> pa.Table:
    """Feature rows of ``view``: one per (entity, event time) later than ``since``.

    ``table`` holds clean rows in any order, including enough history before ``since`` for the
    longest window (plus ``label_delay`` for label aggregates, or a column's delay in ``available_after``;
    an ``at`` column's values may come arbitrarily late, so then the whole history). An aggregate of a
    column in ``available_after`` counts a row when its value is known, ``(t - window, t]`` on that time
    (``label_delay: true`` is the label's delay form); the ``at`` column must be in ``table``. Rows with a
    null entity or time are ignored. The result, sorted by (event_timestamp, entity), has columns
    ``[view.entity, "event_timestamp", *view.feature_names()]``; count is the number of rows in the
    window, sum/mean/min/max ignore nulls and NaN (null when none), count_distinct counts non-null
    values, ``seconds_since_previous`` is the gap to the entity's previous distinct event time.
    """
    entity = table.column(view.entity).combine_chunks()
    ts_col = table.column(timestamp_column).combine_chunks()
    if ts_col.type != TIMESTAMP_TYPE:
        ts_col = pc.cast(ts_col, TIMESTAMP_TYPE)  # safe cast: refuses to truncate ns to us
    ts, ts_valid = _numpy(ts_col.cast(pa.int64()), 0)
    encoded = pc.dictionary_encode(entity)
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)  # entity code in value order
    rank[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
    codes, ent_valid = _numpy(encoded.indices, 0)
    keep = np.flatnonzero(ts_valid & ent_valid)
    codes = rank[codes]
    # Rows sharing (entity, time) are ordered by the values they add up: a float sum depends on the order
    # of its terms, so the same rows in another input order gave sums a few ulps apart.
    summed = {a.column for a in view.aggregates if {"sum", "mean"} & set(a.functions)}
    ties = [_numpy(pc.cast(table.column(c).combine_chunks(), pa.float64()), np.nan)[0][keep] for c in sorted(summed)]
    order = keep[np.lexsort((*ties, ts[keep], codes[keep]))]
    ts_s, codes_s = ts[order], codes[order]
    new_group = np.concatenate([[len(order) > 0], codes_s[1:] != codes_s[:-1]])
    group = np.cumsum(new_group) - 1  # dense, in entity value order

    last = np.concatenate([(group[1:] != group[:-1]) | (ts_s[1:] != ts_s[:-1]), [len(order) > 0]])
    reps = np.flatnonzero(last)  # last row of each (entity, time): the window ends after it
    prev_same = np.concatenate([[False], group[reps[1:]] == group[reps[:-1]]])
    gap = np.full(len(reps), np.nan)
    gap[1:] = (ts_s[reps[1:]] - ts_s[reps[:-1]]) / 1e6
    selected = ts_s[reps] > _micros(since) if since is not None else np.ones(len(reps), dtype=bool)
    q = reps[selected]

    features: dict[str, pa.Array] = {}
    if len(q):
        index = _Index(group, ts_s, int(group[-1]) + 1)
        qgroup, qt = group[q], ts_s[q]
        for agg in view.aggregates:
            column = pc.take(table.column(agg.column).combine_chunks(), pa.array(order))
            known = known_after(agg.column, agg.label_delay, label_delay, available_after or {})
            if isinstance(known, str):  # known at another column's time: windows over rows sorted by that time
                sub, known_us = _known_order(table.column(known), order, group, ts_s)
                at_index = _Index(group[sub], known_us, index.n_groups)
                column = pc.take(column, pa.array(sub))
                features.update(_aggregate(agg, column, group[sub], at_index, qgroup, qt, 0, None))
            else:
                delay = 0 if known is None else known // _US
                features.update(_aggregate(agg, column, group, index, qgroup, qt, delay, q + 1))
    if view.time_since_previous:
        features[TIME_SINCE_PREVIOUS] = pa.array(gap[selected], pa.float64(), mask=~prev_same[selected])

    out_order = np.lexsort((group[q], ts_s[q]))  # by (event_timestamp, entity)
    columns = {
        view.entity: pc.take(entity, pa.array(order[q][out_order])),
        FEATURE_TIMESTAMP: pa.array(ts_s[q][out_order], pa.int64()).cast(TIMESTAMP_TYPE),
    }
    for agg in view.aggregates if not len(q) else ():  # no rows: typed empty columns
        for fn in agg.functions:
            for w in agg.windows:
                features[feature_name(agg.column, fn, w)] = pa.array([], pa.int64() if "count" in fn else pa.float64())
    for name in view.feature_names():
        columns[name] = pc.take(features[name], pa.array(out_order))
    return pa.table(columns)
