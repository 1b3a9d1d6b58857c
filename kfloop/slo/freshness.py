"""The feature-freshness indicator from the workspace: fresh and stale minutes of each online feature view.

The events are (view, minute) pairs over the window's whole minutes, judged from the freshness samples every
online-store writer records (:mod:`kfloop.feature_repo.freshness`, one per view and minute it wrote in). With
the threshold ``T = features.freshness_sla``, the minute ``[m, m + 1min)`` of a view is **good** when

- the age of the view's newest online event at the minute's end, ``m + 1min - newest_event``, is at most ``T``,
  where ``newest_event`` is that of the newest sample at or before ``m`` (carried forward between samples; a
  sample without one keeps the value before it), **or**
- a sample of that minute wrote rows (``events > 0``) with ``lag_p99 <= T``,

and bad otherwise (also when no newest event is known). A view's minutes count from its first sample: minutes
before it are not counted. A sample from before the window is looked for (1h, then 1d, then one window back)
so a view that wrote before the window and then fell silent counts its silent minutes as bad; a view with no
sample in the window nor in the window before it is reported as silent and counts no minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.layout import freshness_prefix
from kfloop.slo.status import Count
from kfloop.storage import Storage

__all__ = ["MINUTE", "count_minutes", "freshness_count", "online_views"]

MINUTE = timedelta(minutes=1)


class Sample(Protocol):
    """What the counting reads of a :class:`kfloop.feature_repo.freshness.FreshnessSample`."""

    @property
    def minute(self) -> datetime: ...
    @property
    def events(self) -> int: ...
    @property
    def lag_p99(self) -> float: ...
    @property
    def newest_event(self) -> datetime | None: ...


def _good_in_gap(first: datetime, end: datetime, newest: datetime | None, threshold: timedelta) -> int:
    """Good minutes among ``[first, end)`` without a sample: those whose end is within ``threshold`` of
    ``newest``, i.e. ``m <= newest + threshold - 1min`` (the age only grows until the next sample)."""
    if newest is None or end <= first:
        return 0
    last_good = newest + threshold - MINUTE
    if last_good < first:
        return 0
    return min((end - first) // MINUTE, (last_good - first) // MINUTE + 1)


def count_minutes(
    samples: Sequence[Sample],
    start: datetime,
    end: datetime,
    threshold: timedelta,
    carried: Sample | None = None,
) -> tuple[int, int]:
    """(good, total) minutes of one view in ``[start, end)`` (whole minutes) from its samples in that range,
    oldest first; ``carried``: its newest sample before ``start`` (None: counting starts at the first sample)."""
    inside = sorted((s for s in samples if start <= s.minute < end), key=lambda s: s.minute)
    if carried is None and not inside:
        return 0, 0
    first = start if carried is not None else inside[0].minute
    newest = carried.newest_event if carried is not None else None
    good, cursor = 0, first
    for s in inside:
        good += _good_in_gap(cursor, s.minute, newest, threshold)
        if s.newest_event is not None:
            newest = s.newest_event
        written_in_time = s.events > 0 and s.lag_p99 <= threshold.total_seconds()
        young = newest is not None and s.minute + MINUTE - newest <= threshold
        good += written_in_time or young
        cursor = s.minute + MINUTE
    good += _good_in_gap(cursor, end, newest, threshold)
    return good, (end - first) // MINUTE


def online_views(config: Config) -> list[str]:
    """Every feature view served online: the configured views, then the attribute tables'."""
    return [v.name for v in config.features.views] + [t.name for t in config.features.tables]


def _carried(storage: Storage, view: str, start: datetime, window: timedelta) -> Sample | None:
    """The view's newest sample before ``start``, looked for 1h, then 1d, then one window back (one read of a
    few objects when the view is alive, more only for a view silent longer)."""
    from kfloop.feature_repo.freshness import read_samples

    for back in (timedelta(hours=1), timedelta(days=1), window):
        before = read_samples(storage, view, start - back, start)
        if before:
            return before[-1]
    return None


def freshness_count(config: Config, storage: Storage, start: datetime, end: datetime) -> Count:
    """The freshness indicator over the whole minutes of ``[start, end)`` (a minute still running is not judged
    yet), summed over :func:`online_views` (see the module doc)."""
    from kfloop.feature_repo.freshness import read_samples
    from kfloop.minute_samples import minute_of

    end, span = minute_of(end), end - start
    start = end - span

    sla = config.features.freshness_sla
    threshold = parse_duration(sla)
    good = total = 0
    worst: tuple[int, str] | None = None
    silent = []
    views = online_views(config)
    for view in views:
        samples = read_samples(storage, view, start, end)
        g, t = count_minutes(samples, start, end, threshold, _carried(storage, view, start, end - start))
        if t == 0:
            silent.append(view)
            continue
        good, total = good + g, total + t
        if t - g and (worst is None or t - g > worst[0]):
            worst = (t - g, view)
    if not views:
        return Count(0, 0, "no feature view is configured (features.views, features.tables)")
    if total == 0:
        return Count(
            0,
            0,
            f"no freshness sample of {', '.join(views)} in the window or the one before it "
            f"[{freshness_prefix('<view>')}/]",
        )
    detail = f"{total - good:,} of {total:,} view-minutes older than features.freshness_sla ({sla})"
    if worst:
        detail += f", most in {worst[1]} ({worst[0]:,})"
    if silent:
        detail += f"; no write recorded: {', '.join(silent)}"
    return Count(good, total, f"{detail} [{freshness_prefix('<view>')}/]")
