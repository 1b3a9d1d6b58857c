"""Shared pieces of the stream tests: the session's real redis-server, the stream section, online reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from benchmarks.redis_server import RedisServer
from kfloop import lake
from kfloop.components.features import compute_features
from kfloop.components.materialize import latest_per_entity
from kfloop.components.validate import validate
from kfloop.config import Config, FeatureViewSpec
from kfloop.feature_repo.store import open_store
from kfloop.layout import offline_key
from kfloop.storage import Storage
from tests.feature_repo.conftest import own_redis, redis_server  # noqa: F401  (fixtures)
from tests.feature_repo.harness import NOW


def demo_event(i: int, when: datetime) -> dict:
    """One demo transaction (the fraud source's columns) at ``when``."""
    return {
        "transaction_id": f"tx-{i:06d}",
        "customer_id": f"c-{i % 7}",
        "merchant_id": f"m-{i % 3}",
        "event_timestamp": when.isoformat(),
        "amount": 10.0 + i,
        "merchant_category": "grocery",
        "channel": "pos",
        "distance_from_home_km": 1.0,
        "hour_of_day": when.hour,
        "is_fraud": 0,
    }


def stream_edit(server: RedisServer, **source: object) -> Callable[[dict], None]:
    """A config edit adding a stream section on ``server`` (archives only when the worker stops)."""

    def edit(data: dict) -> None:
        data["source"].update(source)
        data["stream"] = {
            "source": "redis",
            "redis": {"url": "${KFLOOP_STREAM_REDIS_URL}", "claim_idle": "1h"},
            "batch_size": 200,
            "poll": "1s",
            "archive_every": "30m",
        }

    return edit


def online_rows(store: FeatureStore, view: FeatureViewSpec, entities: Sequence) -> dict:
    """entity → {event_timestamp (aware UTC), feature: value} read through the online store's interface."""
    fv = store.get_feature_view(view.name)
    kind = next(e.value_type for e in store.list_entities() if e.join_key == view.entity)
    values = python_values_to_proto_values(list(entities), kind)
    keys = [EntityKeyProto(join_keys=[view.entity], entity_values=[v]) for v in values]
    rows = store._get_provider().online_read(store.config, fv, keys, view.feature_names())
    out = {}
    for entity, (ts, row) in zip(entities, rows, strict=True):
        if ts is None or row is None:
            continue
        got = {"event_timestamp": ts if ts.tzinfo else ts.replace(tzinfo=UTC)}
        for name in view.feature_names():
            proto = row.get(name)
            got[name] = (
                None if proto is None or proto.WhichOneof("val") is None else feast_value_type_to_python_type(proto)
            )
        out[entity] = got
    return out


def assert_lake_holds_each_once(config: Config, storage: Storage, records: Sequence[dict]) -> None:
    """Every sent event is in the raw lake exactly once (none lost, none archived twice)."""
    manifest = lake.read_manifest(storage, config.source.dataset)
    batches = lake.iter_dataset(storage, manifest, 10_000, ["transaction_id"])
    ids = [t for batch in batches for t in batch.column(0).to_pylist()]
    assert sorted(ids) == sorted(r["transaction_id"] for r in records), "every event in the lake exactly once"


def assert_online_equals_batch(config: Config, storage: Storage, environ: Mapping[str, str]) -> None:
    """Validate and compute the features from the archived events, then every entity's online values equal its
    newest offline row, for every feature (floats to 1e-9: summation order)."""
    validate(config, storage, now=NOW)
    compute_features(config, storage)
    feast = open_store(config, storage, environ)
    for view in config.features.views:
        expected = latest_per_entity(pq.read_table(storage.local_path(offline_key(view.name))), view.entity)
        online = online_rows(feast, view, expected.column(view.entity).to_pylist())
        assert expected.num_rows >= 10
        for want in expected.to_pylist():
            got = online[want[view.entity]]
            # Feast's SQLite store keeps the row's time to the second (Redis keeps the microseconds)
            seconds = got["event_timestamp"].replace(microsecond=0)
            assert seconds == want["event_timestamp"].replace(microsecond=0), want[view.entity]
            for name in view.feature_names():
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), (view.name, want[view.entity], name)
