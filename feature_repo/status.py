"""Freshness of every feature view and attribute table: newest event offline and online, materialization lag
vs the SLA."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kfloop import lake
from kfloop.config import Config
from kfloop.config.contract import parse_duration
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

    @property
    def stale(self) -> bool:
        late = self.lag_seconds is None or self.lag_seconds > self.sla_seconds
        return late or (self.pending_source_seconds or 0) > self.sla_seconds


def _seconds(newer: str | None, older: str | None) -> float | None:
    if newer is None or older is None:
        return None
    return max(0.0, (datetime.fromisoformat(newer) - datetime.fromisoformat(older)).total_seconds())


def feature_status(config: Config, storage: Storage, clean_dataset: str) -> list[ViewStatus]:
    """Status of every configured view, then every attribute table, from the stage's state files and the
    clean dataset manifests (a table's own clean dataset tells whether its view is behind)."""
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
            )
        )
    return out
