"""Freshness of every feature view and attribute table: newest event offline and online, materialization lag
vs the SLA, and where it matters to a caller: how long after their events values became available online
(p50/p99 of the last hour's writes, :mod:`kfloop.feature_repo.freshness`) and the wall-clock age of the newest
value online."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kfloop import lake
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.feature_repo.freshness import read_samples
from kfloop.feature_repo.state import load_state
from kfloop.layout import clean_dataset as clean_name
from kfloop.storage import Storage


@dataclass(frozen=True)
class ViewStatus:
    """One view's freshness; ``lag_seconds`` is what alerts watch (None: never materialized)."""

    view: str
    offline_rows: int
    newest_offline: str | None
    newest_online: str | None
    online_entities: int
    lag_seconds: float | None
    sla_seconds: float
    pending_source_seconds: float | None  # clean data newer than the offline table (features not computed yet)
    push_lag_p50: float | None = None  # event time → online write, over the last PUSH_LAG_WINDOW's writes
    push_lag_p99: float | None = None
    pushed_events: int = 0  # rows written online in that window
    # now minus the newest event time online: the materialize stage's watermark or the newest event a writer (the
    # stream worker) reported in the last PUSH_LAG_WINDOW; None: nothing online
    online_age_seconds: float | None = None

    @property
    def stale(self) -> bool:
        late = self.lag_seconds is None or self.lag_seconds > self.sla_seconds
        return late or (self.pending_source_seconds or 0) > self.sla_seconds


#: The writes ``push_lag_p50``/``p99`` summarize: the last hour's minute samples.
PUSH_LAG_WINDOW = timedelta(hours=1)


def _seconds(newer: str | None, older: str | None) -> float | None:
    if newer is None or older is None:
        return None
    return max(0.0, (datetime.fromisoformat(newer) - datetime.fromisoformat(older)).total_seconds())


def feature_status(
    config: Config, storage: Storage, clean_dataset: str, now: datetime | None = None
) -> list[ViewStatus]:
    """Status of every configured view, then every attribute table, from the stage's state files, the
    clean dataset manifests (a table's own clean dataset tells whether its view is behind) and the writers'
    freshness samples (the p99 of the minutes' p99s: an upper bound when several minutes are combined)."""
    now = now or datetime.now(UTC)
    clean = lake.read_manifest(storage, clean_dataset)
    newest = {v.name: clean.watermark if clean else None for v in config.features.views}
    for table in config.features.tables:
        own = lake.read_manifest(storage, clean_name(table.name))
        newest[table.name] = own.watermark if own else None
    sla = parse_duration(config.features.freshness_sla).total_seconds()
    out = []
    for name, newest_clean in newest.items():
        st = load_state(storage, name)
        lag = _seconds(st.computed_until, st.materialized_until) if st.materialized_until else None
        samples = [s for s in read_samples(storage, name, now - PUSH_LAG_WINDOW, now) if s.events]
        online = [datetime.fromisoformat(st.materialized_until)] if st.materialized_until else []
        online += [s.newest_event for s in samples if s.newest_event is not None]
        events = sum(s.events for s in samples)
        out.append(
            ViewStatus(
                name,
                st.offline_rows,
                st.computed_until,
                st.materialized_until,
                st.online_entities,
                lag,
                sla,
                _seconds(newest_clean, st.computed_until),
                sum(s.lag_p50 * s.events for s in samples) / events if events else None,
                max((s.lag_p99 for s in samples), default=None),
                events,
                max(0.0, (now - max(online)).total_seconds()) if online else None,
            )
        )
    return out
