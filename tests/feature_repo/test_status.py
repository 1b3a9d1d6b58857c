"""Freshness (``kfloop.feature_repo.status``) and the Feast repo the stages apply, on both online stores."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

from kfloop.config.contract import parse_duration
from kfloop.feature_repo.definitions import entity_name
from kfloop.feature_repo.status import ViewStatus, feature_status
from kfloop.layout import clean_dataset
from tests.feature_repo.harness import CUSTOMERS, MERCHANTS, Loop, OnlineBackend, demo_frames


@pytest.fixture
def loop(tmp_path: Path, online_backend: OnlineBackend) -> Loop:
    return Loop.create(tmp_path / "ws", online_backend)


def status(loop: Loop) -> dict[str, ViewStatus]:
    return {s.view: s for s in feature_status(loop.config, loop.storage, clean_dataset(loop.config.source.dataset))}


def seconds(newer: pd.Timestamp, older: pd.Timestamp) -> float:
    return (newer - older).total_seconds()


def test_lag_is_unknown_and_stale_before_materialization_and_zero_after(loop: Loop) -> None:
    early = loop.load_demo("early")
    _, late = demo_frames()
    newest = early["event_timestamp"].max()
    for s in status(loop).values():
        assert (s.lag_seconds, s.newest_online, s.online_entities) == (None, None, 0)
        assert s.stale  # computed offline, never materialized
        assert s.newest_offline == newest.isoformat() and s.offline_rows == len(early)
        assert s.pending_source_seconds == 0.0 and s.sla_seconds == 15 * 60

    loop.materialize()
    for view, s in status(loop).items():
        assert s.lag_seconds == 0.0 and not s.stale, view
        assert s.newest_online == s.newest_offline == newest.isoformat()
        assert s.online_entities == early[loop.spec(view).entity].nunique()

    # new clean data, features not computed yet: the offline tables lag the source
    loop.ingest(late)
    loop.validate()
    for s in status(loop).values():
        assert s.lag_seconds == 0.0 and s.stale
        assert s.pending_source_seconds == seconds(late["event_timestamp"].max(), newest)

    # computed, not materialized: the online store lags the offline tables by exactly the new span
    loop.features()
    for s in status(loop).values():
        assert s.stale and s.pending_source_seconds == 0.0
        assert s.lag_seconds == seconds(late["event_timestamp"].max(), newest) > 0

    loop.materialize()
    assert all(s.lag_seconds == 0.0 and not s.stale for s in status(loop).values())


def later_copy(frame: pd.DataFrame, minutes: int, number: int) -> pd.DataFrame:
    """The newest transaction again, ``minutes`` later, as a new transaction."""
    row = frame.sort_values("event_timestamp").tail(1).copy()
    row["event_timestamp"] += timedelta(minutes=minutes)
    row["hour_of_day"] = row["event_timestamp"].dt.hour
    row["transaction_id"] = f"tx-9{number:08d}"
    return pd.concat([frame, row], ignore_index=True)


def test_lag_within_the_sla_is_fresh_beyond_it_stale(loop: Loop) -> None:
    """features.freshness_sla is 15m: 5 minutes of unmaterialized events are fresh, 20 minutes stale."""
    early = loop.load_demo("early")
    loop.materialize()
    five = later_copy(early, 5, 1)
    loop.load(five)  # only rows after the watermark are new: the one 5 minutes later
    assert all(s.lag_seconds == 300.0 and not s.stale for s in status(loop).values())
    loop.load(later_copy(five, 15, 2))
    assert all(s.lag_seconds == 1200.0 and s.stale for s in status(loop).values())
    loop.materialize()
    assert all(s.lag_seconds == 0.0 and not s.stale for s in status(loop).values())


def test_status_counts_each_online_entity_once_after_incremental_runs(loop: Loop) -> None:
    early = loop.load_demo("early")
    _, late = demo_frames()
    loop.materialize()
    loop.load(late)
    loop.materialize()
    stored = loop.online_entity_counts()
    everything = pd.concat([early, late])
    assert stored == {v.name: everything[v.entity].nunique() for v in loop.config.features.views}
    assert {v: s.online_entities for v, s in status(loop).items()} == stored


def test_feast_registry_holds_what_the_config_declares(loop: Loop) -> None:
    loop.load_demo("early")
    written = loop.materialize()
    store = loop.store()
    cfg = loop.config.features
    assert sorted(v.name for v in store.list_feature_views()) == sorted(v.name for v in cfg.views)
    assert sorted(e.name for e in store.list_entities()) == sorted({entity_name(v.entity) for v in cfg.views})
    assert [s.name for s in store.list_feature_services()] == [cfg.service]
    service = store.get_feature_service(cfg.service)
    assert [p.name for p in service.feature_view_projections] == [CUSTOMERS, MERCHANTS]
    for spec in cfg.views:
        view = store.get_feature_view(spec.name)
        assert [f.name for f in view.features] == spec.feature_names()
        assert view.entities == [entity_name(spec.entity)] and view.online
        assert view.ttl == parse_duration(spec.ttl)
        assert view.batch_source.path.endswith(f"features/{spec.name}.parquet")
        # materialization is recorded the way `feast materialize` records it
        assert view.materialization_intervals
        end = view.materialization_intervals[-1][1]
        assert end == datetime.fromisoformat(written[spec.name].materialized_until)
    online = store.config.online_store
    if loop.backend.name == "redis":
        assert isinstance(online, RedisOnlineStoreConfig)
        assert online.connection_string == loop.backend.environ["REDIS_CONNECTION_STRING"]  # ${VAR} expanded
    else:
        assert isinstance(online, SqliteOnlineStoreConfig)
        assert Path(online.path) == loop.workspace / "feast" / "online.db"
