"""Freshness where it matters: how long after its event a feature value became available online.

Every writer of the online store (the stream worker per batch, the materialize stage per run) measures, for each
row it writes, the lag from the row's event timestamp to the write, and keeps per view and wall-clock minute the
lag's p50, p99 and maximum and the newest event online. Closed minutes are stored as samples, one object per
writer and hour (``layout.freshness_key``), so concurrent writers never overwrite each other. They feed
``kfloop features status`` (lag percentiles, age of the newest online value), the freshness SLO and the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from kfloop.layout import freshness_key, freshness_prefix
from kfloop.minute_samples import hour_bodies, hour_of, minute_of
from kfloop.storage import Storage

_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class FreshnessSample:
    """One view's writes in one wall-clock minute."""

    view: str
    minute: datetime  # UTC, start of the minute
    events: int  # rows made available online in that minute
    lag_p50: float  # seconds from a row's event timestamp to its online write
    lag_p99: float
    lag_max: float
    newest_event: datetime | None  # newest event time online for the view after that minute

    def to_json(self) -> dict:
        return {
            "view": self.view,
            "minute": self.minute.isoformat(),
            "events": self.events,
            "lag_p50": self.lag_p50,
            "lag_p99": self.lag_p99,
            "lag_max": self.lag_max,
            "newest_event": self.newest_event.isoformat() if self.newest_event else None,
        }

    @staticmethod
    def from_json(body: dict) -> FreshnessSample:
        newest = body.get("newest_event")
        return FreshnessSample(
            body["view"],
            datetime.fromisoformat(body["minute"]),
            int(body["events"]),
            float(body["lag_p50"]),
            float(body["lag_p99"]),
            float(body["lag_max"]),
            datetime.fromisoformat(newest) if newest else None,
        )


def record_samples(storage: Storage, samples: Sequence[FreshnessSample], writer: str = "default") -> None:
    """Store ``samples`` as ``writer``'s: merged into its hour objects, a (view, minute) sample written again
    replacing the earlier one (a writer retrying a write records it once)."""
    groups: dict[tuple[str, str], list[FreshnessSample]] = {}
    for s in samples:
        groups.setdefault((s.view, hour_of(s.minute)), []).append(s)
    for (view, hour), new in groups.items():
        key = freshness_key(view, hour, writer)
        try:
            old = [FreshnessSample.from_json(b) for b in json.loads(storage.read_text(key))]
        except FileNotFoundError:
            old = []
        merged = {s.minute: s for s in old} | {s.minute: s for s in new}
        storage.write_text(key, json.dumps([merged[m].to_json() for m in sorted(merged)]))


def _combine(samples: list[FreshnessSample]) -> FreshnessSample:
    """Several writers' samples of one minute: events add up, p50 is the events-weighted mean of theirs (an
    estimate), p99 and the maximum are the worst writer's (never better than the truth)."""
    if len(samples) == 1:
        return samples[0]
    events = sum(s.events for s in samples)
    p50 = sum(s.lag_p50 * s.events for s in samples) / events if events else 0.0
    newest = [s.newest_event for s in samples if s.newest_event is not None]
    first = samples[0]
    return FreshnessSample(
        first.view,
        first.minute,
        events,
        p50,
        max(s.lag_p99 for s in samples),
        max(s.lag_max for s in samples),
        max(newest) if newest else None,
    )


def read_samples(storage: Storage, view: str, start: datetime, end: datetime) -> list[FreshnessSample]:
    """The view's samples with ``start <= minute < end``, one per minute (writers combined), oldest first."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    by_minute: dict[datetime, list[FreshnessSample]] = {}
    for _, bodies in hour_bodies(storage, freshness_prefix(view), start, end, "freshness samples"):
        for body in bodies:
            s = FreshnessSample.from_json(body)
            if start <= s.minute < end:
                by_minute.setdefault(s.minute, []).append(s)
    return [_combine(by_minute[m]) for m in sorted(by_minute)]


@dataclass
class _Minute:
    lags: list[np.ndarray] = field(default_factory=list)
    newest: datetime | None = None


class LagRecorder:
    """Collects a writer's lags per view and minute; ``closed`` hands back the samples of finished minutes."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, datetime], _Minute] = {}

    def add(self, view: str, lags: np.ndarray, newest_event: datetime | None, written_at: datetime) -> None:
        """Rows of ``view`` written at ``written_at`` with these lags (seconds); ``newest_event``: newest online."""
        slot = self._open.setdefault((view, minute_of(written_at)), _Minute())
        if len(lags):
            slot.lags.append(np.asarray(lags, dtype=np.float64))
        if newest_event is not None and (slot.newest is None or newest_event > slot.newest):
            slot.newest = newest_event

    def closed(self, now: datetime | None = None) -> list[FreshnessSample]:
        """Samples of every minute that ended before ``now`` (all of them for None), removed from the recorder."""
        current = minute_of(now) if now is not None else None
        out = []
        for key in sorted(self._open, key=lambda k: (k[1], k[0])):
            view, minute = key
            if current is not None and minute >= current:
                continue
            slot = self._open.pop(key)
            lags = np.concatenate(slot.lags) if slot.lags else np.zeros(0)
            if len(lags):
                p50, p99 = np.percentile(lags, [50, 99])
                out.append(
                    FreshnessSample(view, minute, len(lags), float(p50), float(p99), float(lags.max()), slot.newest)
                )
            else:
                out.append(FreshnessSample(view, minute, 0, 0.0, 0.0, 0.0, slot.newest))
        return out


def lag_seconds(event_us: np.ndarray, written_at: datetime) -> np.ndarray:
    """Seconds from each event time (µs since the epoch, UTC) to ``written_at``; never negative (an event
    stamped in the future by a skewed clock is available at once, not before it happened)."""
    now_us = int(written_at.timestamp() * 1_000_000)
    return np.maximum(now_us - np.asarray(event_us, dtype=np.int64), 0) / 1e6
