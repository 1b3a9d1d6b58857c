"""The direct Arrow → Feast encoder stores exactly what Feast's own path stores, on real SQLite files and a real
redis-server: the same table is written through ``_convert_arrow_to_proto`` + ``online_write_batch`` into one store
and through ``kfloop.feature_repo.online_write`` into another, then every raw row / hash field is compared byte for
byte and every entity is read back through the Feast SDK from both. Every dtype, nulls, NaN, ±0, infinities,
negative and extreme integers, unicode, timestamps before 1970 and with nanoseconds, and upserts over stored rows."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp
from feast.utils import _convert_arrow_to_proto

from benchmarks.materialize import bench_config, feature_table, view_spec
from benchmarks.redis_server import RedisServer
from kfloop.components.materialize import write_online
from kfloop.config.features import FEATURE_TIMESTAMP
from kfloop.feature_repo import online_write
from kfloop.feature_repo.online_encode import encode_rows
from kfloop.feature_repo.online_write import blocker, write_encoded
from kfloop.feature_repo.store import objects_for, repo_settings
from kfloop.storage import LocalStorage
from tests.feature_repo.harness import feature_config, redis_backend, sqlite_backend

N = 1000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
FEATURES = {  # every Feast type a feature can be written with here
    "i32": Int32,
    "i64": Int64,
    "i64_nulls": Int64,
    "f32": Float32,
    "f64": Float64,
    "text": String,
    "flag": Bool,
    "seen_at": UnixTimestamp,
}
WORDS = ["", "a", "é", "naïve café", "東京", "🚀 launch", "quote ' \" \\", "x" * 300, "tab\there\nnewline"]


def _table(rng: np.random.Generator, ids: list, ts_unit: str = "us") -> pa.Table:
    n = len(ids)

    def mask(p: float = 0.1) -> np.ndarray:
        return rng.random(n) < p

    f64 = rng.normal(0, 1e6, n)
    f64[rng.random(n) < 0.05] = np.nan  # NaN: Feast stores an empty value, as for null
    f64[:6] = [0.0, -0.0, np.inf, -np.inf, 5e-324, 1.7976931348623157e308]
    f32 = rng.normal(0, 50, n).astype(np.float32)
    f32[rng.random(n) < 0.05] = np.nan
    f32[:3] = [np.float32(0.1), -0.0, np.inf]
    i64 = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True)
    i64[:4] = [0, -1, np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    i32 = rng.integers(-(2**31), 2**31 - 1, n, endpoint=True).astype(np.int32)
    i32[:3] = [0, -1, np.iinfo(np.int32).min]
    event = START_US + rng.integers(-(10**9), 10**12, n)
    event[:2] = [START_US, -1_500_000]  # a whole second; before 1970 with a fraction
    seen = rng.integers(-(10**15), 10**16, n)
    columns = {
        "key": pa.array(ids),
        FEATURE_TIMESTAMP: _timestamps(event, ts_unit, rng),
        "i32": pa.array(i32, mask=mask()),
        "i64": pa.array(i64),  # no nulls: any int64 (with nulls Feast goes through float64)
        "i64_nulls": pa.array(rng.integers(-(2**40), 2**40, n), pa.int64(), mask=mask(0.3)),
        "f32": pa.array(f32, mask=mask()),
        "f64": pa.array(f64, mask=mask()),
        "text": pa.array([WORDS[i] for i in rng.integers(0, len(WORDS), n)], mask=mask()),
        "flag": pa.array(rng.random(n) < 0.5, mask=mask()),
        "seen_at": pa.array(seen, pa.int64(), mask=mask()).cast(pa.timestamp("us", tz="UTC")),
        "unused": pa.array(rng.random(n)),  # not a feature of the view: neither path writes it
    }
    return pa.table(columns)


def _timestamps(us: np.ndarray, unit: str, rng: np.random.Generator) -> pa.Array:
    if unit == "ns":  # nanoseconds: Feast's datetimes cut them off
        return pa.array(us * 1000 + rng.integers(0, 1000, len(us)), pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _view(key_type: ValueType) -> tuple[Entity, FeatureView]:
    entity = Entity(name="thing", join_keys=["key"], value_type=key_type)
    key_dtype = {ValueType.STRING: String, ValueType.INT64: Int64}[key_type]
    view = FeatureView(
        name="everything",
        entities=[entity],
        ttl=timedelta(0),
        schema=[Field(name="key", dtype=key_dtype)] + [Field(name=n, dtype=t) for n, t in FEATURES.items()],
        source=FileSource(name="everything_source", path="unused.parquet", timestamp_field=FEATURE_TIMESTAMP),
        online=True,
    )
    return entity, view


@dataclass
class Pair:
    """Two stores with the same view applied: ``feast`` is written through Feast's path, ``ours`` through ours."""

    feast: FeatureStore
    ours: FeatureStore
    view: FeatureView
    key_type: ValueType
    redis: RedisServer | None

    def write(self, table: pa.Table) -> None:
        assert blocker(self.ours.config, self.view, table, "key", self.key_type) is None
        rows = _convert_arrow_to_proto(table.combine_chunks().to_batches()[0], self.view, {"key": self.key_type})
        self.feast._get_provider().online_write_batch(self.feast.config, self.view, rows, None)
        write_encoded(self.ours, self.view, table, "key", self.key_type)

    def assert_same(self, ids: list) -> None:
        if self.redis is None:
            assert _sqlite_rows(self.ours) == _sqlite_rows(self.feast)
        else:
            assert _redis_hashes(self.redis, self.ours) == _redis_hashes(self.redis, self.feast)
        assert _read(self.ours, self.view, ids, self.key_type) == _read(self.feast, self.view, ids, self.key_type)
        refs = [f"{self.view.name}:{f}" for f in FEATURES]
        rows = [{"key": i} for i in ids]
        ours = self.ours.get_online_features(features=refs, entity_rows=rows).to_dict()
        assert ours == self.feast.get_online_features(features=refs, entity_rows=rows).to_dict()
        assert any(v is not None for v in ours["f64"])  # the stores hold values, not only nulls


def _store(root: Path, online: dict, project: str) -> FeatureStore:
    """A store with kfloop's repo settings (entity key v3, Redis skip_dedup, …) and ``online``'s store."""
    config = feature_config(root, sqlite_backend())
    settings = {**repo_settings(config, str(root)), "online_store": online, "project": project}
    return FeatureStore(config=RepoConfig(repo_path=root, **settings))


def _pair(tmp_path: Path, backend: str, key_type: ValueType, redis: RedisServer | None, **online: object) -> Pair:
    entity, view = _view(key_type)
    stores = []
    for i, name in enumerate(("feast", "ours")):
        root = tmp_path / name
        root.mkdir()
        if backend == "sqlite":
            settings = repo_settings(feature_config(root, sqlite_backend()), str(root))["online_store"]
        else:
            assert redis is not None
            environ = redis_backend(redis).environ
            settings = repo_settings(feature_config(root, redis_backend(redis)), str(root), environ)["online_store"]
            settings["connection_string"] += f",db={i}"  # one database each, the same key names in both
        store = _store(root, {**settings, **online}, "encode_test")
        store.apply([entity, view])
        stores.append(store)
    return Pair(stores[0], stores[1], view, key_type, redis)


def _sqlite_rows(store: FeatureStore) -> list[tuple]:
    path = SqliteOnlineStore._get_db_path(store.config)
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT entity_key, feature_name, value, value_text, typeof(value_text), event_ts, typeof(event_ts), "
            'created_ts, vector_value FROM "encode_test_everything" ORDER BY entity_key, feature_name'
        ).fetchall()


def _redis_hashes(server: RedisServer, store: FeatureStore) -> dict[bytes, tuple[dict, int]]:
    db = int(store.config.online_store.connection_string.rsplit("db=", 1)[1])
    client = server.client()
    client.select(db)
    try:
        return {k: (client.hgetall(k), client.ttl(k) > 0) for k in client.scan_iter(count=1000)}
    finally:
        client.close()


def _read(store: FeatureStore, view: FeatureView, ids: list, key_type: ValueType) -> list:
    protos = python_values_to_proto_values(ids, key_type)
    keys = [EntityKeyProto(join_keys=["key"], entity_values=[p]) for p in protos]
    return store._get_provider().online_read(store.config, view, keys, list(FEATURES))


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.flush()
    return redis_server


def _ids(key_type: ValueType, start: int, stop: int) -> list:
    if key_type == ValueType.STRING:
        return [f"entité-{i}" for i in range(start, stop)]
    return [(i * 7919 - 5000) * 1_000_003 for i in range(start, stop)]  # negatives, large


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@pytest.mark.parametrize("key_type", [ValueType.STRING, ValueType.INT64])
def test_same_bytes_and_reads_as_feast_then_upserts(
    tmp_path: Path, backend: str, key_type: ValueType, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(online_write, "CHUNK_ROWS", 97)  # many chunks, the last one short: the chunked paths run
    redis = request.getfixturevalue("fresh_redis") if backend == "redis" else None
    pair = _pair(tmp_path, backend, key_type, redis)
    rng = np.random.default_rng(7)
    first = _ids(key_type, 0, N)
    pair.write(_table(rng, first))
    pair.assert_same(first)
    # upsert: half of the stored entities get new values (one of them twice: its last row wins), plus new ones;
    # nanosecond event times this time
    again = first[::2] + _ids(key_type, N, N + 200)
    second = _table(rng, [*again, again[0]], ts_unit="ns")
    pair.write(second)
    pair.assert_same(first + again)


def test_redis_key_ttl_is_set_like_feast(tmp_path: Path, fresh_redis: RedisServer) -> None:
    pair = _pair(tmp_path, "redis", ValueType.STRING, fresh_redis, key_ttl_seconds=3600)
    ids = _ids(ValueType.STRING, 0, 200)
    pair.write(_table(np.random.default_rng(3), ids))
    hashes = _redis_hashes(fresh_redis, pair.ours)
    assert all(has_ttl for _, has_ttl in hashes.values()) and len(hashes) == len(ids)
    pair.assert_same(ids)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_write_online_falls_back_to_feast_where_bytes_could_differ(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """An int64 column with nulls and values beyond 2^53 (Feast rounds them through float64): ``write_online``
    takes Feast's path, so the stored bytes still equal Feast's."""
    redis = request.getfixturevalue("fresh_redis") if backend == "redis" else None
    pair = _pair(tmp_path, backend, ValueType.STRING, redis)
    ids = _ids(ValueType.STRING, 0, 50)
    table = _table(np.random.default_rng(5), ids)
    big = pa.array([2**60 + 1 if i % 2 else None for i in range(len(ids))], pa.int64())
    table = table.set_column(table.schema.get_field_index("i64_nulls"), "i64_nulls", big)
    reason = blocker(pair.ours.config, pair.view, table, "key", ValueType.STRING)
    assert reason is not None and "i64_nulls" in reason
    rows = _convert_arrow_to_proto(table.to_batches()[0], pair.view, {"key": ValueType.STRING})
    pair.feast._get_provider().online_write_batch(pair.feast.config, pair.view, rows, None)
    assert write_online(pair.ours, pair.view, table, "key") == len(ids)
    pair.assert_same(ids)


def test_bad_rows_name_their_column_and_row() -> None:
    _, view = _view(ValueType.STRING)
    table = _table(np.random.default_rng(1), list("abcdefgh"))
    no_key = table.set_column(0, "key", pa.array(["a", None, *"cdefgh"]))
    with pytest.raises(ValueError, match=r"join key column 'key' is null at row 1"):
        encode_rows(view, no_key, "key", ValueType.STRING)
    ts = pa.array([0, None] + [0] * 6, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    no_time = table.set_column(table.schema.get_field_index(FEATURE_TIMESTAMP), FEATURE_TIMESTAMP, ts)
    with pytest.raises(ValueError, match=rf"event timestamp column '{FEATURE_TIMESTAMP}' is null at row 1"):
        encode_rows(view, no_time, "key", ValueType.STRING)
    as_text = table.set_column(table.schema.get_field_index("f64"), "f64", pa.array(list("12345678")))
    assert "feature f64: DOUBLE from Arrow string" in (
        blocker(_store_config(), view, as_text, "key", ValueType.STRING) or ""
    )


def _store_config() -> RepoConfig:
    root = Path("/nonexistent")
    return RepoConfig(repo_path=root, **repo_settings(feature_config(root, sqlite_backend()), str(root)))


def test_kfloop_feature_tables_take_the_encoded_path(tmp_path: Path) -> None:
    """What the feature stage writes (the benchmark's table has its types) is encoded, never silently slow."""
    config = bench_config("sqlite")
    spec = view_spec(config)
    view = objects_for(config, LocalStorage(tmp_path)).view(spec.name)
    key_type = ValueType.STRING
    table = feature_table(spec, 500, seed=1)
    assert blocker(_store_config(), view, table, spec.entity, key_type) is None
    encoded = encode_rows(view, table, spec.entity, key_type)
    first = python_values_to_proto_values([table.column(spec.entity)[0].as_py()], key_type)
    proto = EntityKeyProto(join_keys=[spec.entity], entity_values=first)
    assert encoded.keys[0].as_py() == serialize_entity_key(proto, entity_key_serialization_version=3)
