"""Running window aggregates of one entity: each event costs O(1) amortized, not a recompute of its history.

Why: recomputing an entity's whole look-back on every batch made a batch's cost grow with the history (a 30-day
merchant window holds every transaction of 30 days), so push lag grew with the window, not with the rate. Here
each ``(aggregate, window)`` is a slider over the entity's history, sorted by (event time, arrival): the window of
the newest event ``t`` is the rows with time in ``(t - delay - width, t - delay]`` (exactly
:func:`kfloop.aggregates.compute_view`'s trailing window, a late-known value counted from when it is known), and
as ``t`` only grows, both edges only move forward. Counts are the edges' distance, sums and means differences of a
prefix sum (the batch engine's arithmetic), min and max monotonic queues, ``count_distinct`` a value counter.
An event older than the newest one, or a new version of a known event, rebuilds the entity (rare: the stream is
mostly in order); the batch engine stays the reference the tests compare against.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from operator import itemgetter

from kfloop.config.availability import known_after
from kfloop.config.contract import parse_duration
from kfloop.config.features import INTEGER_FUNCTIONS, TIME_SINCE_PREVIOUS, FeatureViewSpec, feature_name

#: A buffered event: (event id, arrival sequence, event time (µs since the epoch), value per column). A tuple of
#: plain values, which Python's cyclic garbage collector stops tracking: a worker keeps millions of them, and lists
#: made every full collection walk them all (pauses of hundreds of milliseconds in the push lag).
Row = tuple
TIME = itemgetter(2)
_US = timedelta(microseconds=1)
_NAN = ("NaN",)  # one key for every NaN in a distinct count (NaN != NaN would count each apart)
#: Compact the history list once this share of it is pruned (amortized O(1) per pruned row).
_COMPACT_SHARE = 0.5


@dataclass(frozen=True)
class WindowSpec:
    """One window of one aggregate: the functions computed over it and their feature names."""

    value: int  # index of the column in a row's values
    delay_us: int  # a value counts from its event time plus this (label_delay, available_after)
    width_us: int
    functions: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class ViewPlan:
    """What a view's rows need, precomputed once per view."""

    windows: tuple[WindowSpec, ...]
    summed: tuple[int, ...]  # value indexes with a sum or mean (one prefix sum each)
    numeric: tuple[int, ...]  # value indexes with a sum, mean, min or max (read as floats)
    lookback_us: int
    time_since_previous: bool
    names: tuple[str, ...]  # feature names in the view's order
    counts: frozenset[str]  # the integer features (count, count_distinct); the others are floats

    @classmethod
    def of(cls, view: FeatureViewSpec, values: list[str], label_delay: timedelta, known: dict, lookback_us: int):
        windows = []
        for agg in view.aggregates:
            delay = known_after(agg.column, agg.label_delay, label_delay, known)
            delay_us = 0 if delay is None else delay // _US  # ``at`` columns are refused before this
            for w in agg.windows:
                names = tuple(feature_name(agg.column, fn, w) for fn in agg.functions)
                spec = WindowSpec(values.index(agg.column), delay_us, parse_duration(w) // _US, agg.functions, names)
                windows.append(spec)
        summed = tuple(sorted({w.value for w in windows if {"sum", "mean"} & set(w.functions)}))
        numeric = tuple(sorted({w.value for w in windows if {"sum", "mean", "min", "max"} & set(w.functions)}))
        pairs = ((f, n) for w in windows for f, n in zip(w.functions, w.names, strict=True))
        counts = frozenset(n for f, n in pairs if f in INTEGER_FUNCTIONS)
        names = tuple(view.feature_names())
        return cls(tuple(windows), summed, numeric, lookback_us, view.time_since_previous, names, counts)


def _number(value: object) -> float | None:
    """The value as a sum/min/max sees it: None for null and NaN (the batch engine ignores both)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _distinct_key(value: object) -> object:
    return _NAN if isinstance(value, float) and math.isnan(value) else value


@dataclass
class _Slider:
    """The rows ``[lo, hi)`` (absolute indexes into the entity's rows) of one window at the newest event."""

    spec: WindowSpec
    lo: int = 0
    hi: int = 0
    low: deque = field(default_factory=deque)  # indexes, values increasing: the front is the minimum
    high: deque = field(default_factory=deque)  # indexes, values decreasing: the front is the maximum
    seen: dict = field(default_factory=dict)  # value → rows in the window (count_distinct)


class EntityWindows:
    """One entity's history within the look-back and its sliders at the newest event."""

    def __init__(self, plan: ViewPlan, rows: list[Row]) -> None:
        self.plan = plan
        self._rebuild(rows)

    # --- history -------------------------------------------------------------------------------------------
    @property
    def history(self) -> list[Row]:
        """The kept rows, sorted by (event time, arrival)."""
        return self.rows[self.start :]

    @property
    def newest_us(self) -> int | None:
        return self.rows[-1][2] if len(self.rows) > self.start else None

    def event(self, event_id: str) -> Row | None:
        return self.ids.get(event_id)

    def _rebuild(self, rows: list[Row]) -> None:
        """Start over from ``rows`` (sorted): prune to the look-back and slide every window to the newest event."""
        self.rows, self.start = rows, 0
        self.ids = {r[0]: r for r in rows}
        self._prune()
        if self.start:
            self.rows, self.start = self.rows[self.start :], 0
        self._numbers = {v: [_number(r[3 + v]) for r in self.rows] for v in self.plan.numeric}
        self._prefix = {v: [0.0] for v in self.plan.summed}
        self._valid = {v: [0] for v in self.plan.summed}
        self._extend_prefix(0)
        self.sliders = [_Slider(spec) for spec in self.plan.windows]
        self._slide()

    def _extend_prefix(self, first: int) -> None:
        for v in self.plan.summed:
            prefix, valid, numbers = self._prefix[v], self._valid[v], self._numbers[v]
            for i in range(first, len(self.rows)):
                x = numbers[i]
                prefix.append(prefix[-1] + (x if x is not None else 0.0))
                valid.append(valid[-1] + (x is not None))

    def extend(self, new: list[Row]) -> int:
        """Add rows no older than the newest one (sorted): the common, in-order case. Returns how many rows of the
        stored history this pruned from its front (the state store trims as many)."""
        first = len(self.rows)
        self.rows.extend(new)
        for r in new:
            self.ids[r[0]] = r
        for v in self.plan.numeric:
            self._numbers[v].extend(_number(r[3 + v]) for r in new)
        self._extend_prefix(first)
        self._slide()
        before = self.start
        self._prune()
        pruned = self.start - before
        if self.start > len(self.rows) * _COMPACT_SHARE:
            self._rebuild(self.rows[self.start :])  # re-bases the prefix sums too
        return pruned

    def replace(self, rows: list[Row]) -> None:
        """Take a changed history (a late event, a new version of one): rebuilt from scratch."""
        self._rebuild(rows)

    def _prune(self) -> None:
        """Forget rows no window of the newest event can reach: older than the look-back, except (for
        ``seconds_since_previous``) the newest row before the newest event's time."""
        if len(self.rows) <= self.start:
            return
        cutoff = self.rows[-1][2] - self.plan.lookback_us
        first = bisect.bisect_right(self.rows, cutoff, lo=self.start, key=TIME)
        only_newest = first == len(self.rows) or self.rows[first][2] == self.rows[-1][2]
        if self.plan.time_since_previous and first > self.start and only_newest:
            first -= 1  # the previous event time, for the gap
        for r in self.rows[self.start : first]:
            if self.ids.get(r[0]) is r:
                del self.ids[r[0]]
        self.start = max(self.start, first)

    # --- windows -------------------------------------------------------------------------------------------
    def _slide(self) -> None:
        """Move every window's edges to the newest event."""
        if len(self.rows) <= self.start:
            return
        t, rows, n = self.rows[-1][2], self.rows, len(self.rows)
        for s in self.sliders:
            spec = s.spec
            numbers = self._numbers.get(spec.value)
            end, begin = t - spec.delay_us, t - spec.delay_us - spec.width_us
            while s.hi < n and rows[s.hi][2] <= end:
                self._enter(s, s.hi, numbers[s.hi] if numbers is not None else None, rows[s.hi][3 + spec.value])
                s.hi += 1
            while s.lo < s.hi and rows[s.lo][2] <= begin:
                self._leave(s, s.lo, rows[s.lo][3 + spec.value])
                s.lo += 1

    @staticmethod
    def _enter(s: _Slider, i: int, x: float | None, raw: object) -> None:
        fns = s.spec.functions
        if x is not None and "min" in fns:
            while s.low and s.low[-1][1] >= x:
                s.low.pop()
            s.low.append((i, x))
        if x is not None and "max" in fns:
            while s.high and s.high[-1][1] <= x:
                s.high.pop()
            s.high.append((i, x))
        if raw is not None and "count_distinct" in fns:
            key = _distinct_key(raw)
            s.seen[key] = s.seen.get(key, 0) + 1

    @staticmethod
    def _leave(s: _Slider, i: int, raw: object) -> None:
        if s.low and s.low[0][0] == i:
            s.low.popleft()
        if s.high and s.high[0][0] == i:
            s.high.popleft()
        if raw is not None and "count_distinct" in s.spec.functions:
            key = _distinct_key(raw)
            left = s.seen[key] - 1
            if left:
                s.seen[key] = left
            else:
                del s.seen[key]

    def features(self) -> dict[str, object]:
        """The feature row at the newest event: what the batch engine computes for that row."""
        out: dict[str, object] = {}
        for s in self.sliders:
            v = s.spec.value
            if v in self._prefix:
                valid = self._valid[v][s.hi] - self._valid[v][s.lo]
                total = self._prefix[v][s.hi] - self._prefix[v][s.lo] if valid else None
            for fn, name in zip(s.spec.functions, s.spec.names, strict=True):
                if fn == "count":
                    out[name] = s.hi - s.lo
                elif fn == "count_distinct":
                    out[name] = len(s.seen)
                elif fn == "sum":
                    out[name] = total
                elif fn == "mean":
                    out[name] = None if total is None else total / valid
                elif fn == "min":
                    out[name] = s.low[0][1] if s.low else None
                else:
                    out[name] = s.high[0][1] if s.high else None
        if self.plan.time_since_previous:
            out[TIME_SINCE_PREVIOUS] = self._gap()
        return out

    def _gap(self) -> float | None:
        """Seconds from the previous distinct event time to the newest (None for the entity's first time)."""
        t = self.rows[-1][2]
        i = bisect.bisect_left(self.rows, t, lo=self.start, key=TIME)
        return (t - self.rows[i - 1][2]) / 1e6 if i > self.start else None
