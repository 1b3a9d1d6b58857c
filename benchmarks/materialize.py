"""Materialize benchmark: 1M distinct entity rows of ``customer_activity`` into the online store.

One store per run: SQLite by default, Redis with ``KFLOOP_BENCH_STORE=redis`` (a real ``redis-server``
is started on a free localhost port for the run and stopped at exit). The harness ranks every case of
a run against the fastest peer/floor, so both stores in one run would compare SQLite with Redis.

- ours:  ``kfloop.components.materialize.materialize`` on a fresh workspace (feast apply, offline
         Parquet read, ``latest_per_entity``, the rows encoded straight from Arrow into Feast's bytes and
         written by ``kfloop.feature_repo.online_write``, watermark + registry bookkeeping: everything a real
         run does).
- peer:  Feast's default path: ``FeatureStore.materialize(start, end)`` over the same offline source
         (its offline store query, local compute engine, a proto per value, ``online_write_batch``).
- floor: the rows pre-serialized by Feast's own code (untimed), then the least work to store them:
         sqlite ``executemany`` into Feast's table of the cheapest statement and order known (one multi-row
         upsert per entity, entities in key order: the same bytes in the same rows);
         redis: the ``HSET`` commands of each entity's hash (same key, fields and bytes) already packed in the
         wire protocol, sent 10k per round trip on one connection, every reply read.

Every repeat starts from an empty online store (fresh workspace; Redis ``FLUSHALL``) and the teardown
checks what was written (row/key counts and one entity's bytes equal the floor's).

Aims (from the issue): ours ≥ 2x Feast's default materialize and within 3x of the floor.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from feast import FeatureStore, FeatureView, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, extract_text_and_num
from feast.utils import _convert_arrow_to_proto, to_naive_utc
from google.protobuf.timestamp_pb2 import Timestamp

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from benchmarks.redis_server import REDIS_SERVER, RedisServer, start_redis
from kfloop.components.materialize import materialize
from kfloop.config import Config, FeatureViewSpec, load_config, parse_config
from kfloop.demo import DEFAULT_START
from kfloop.feature_repo.online_write import sqlite_upsert_sql
from kfloop.feature_repo.state import ViewState
from kfloop.feature_repo.store import objects_for, open_store
from kfloop.layout import FEAST_DIR, feast_project, offline_key
from kfloop.storage import LocalStorage

ROWS = 1_000_000
SEED = 42
CONFIG_PATH = ROOT / "examples" / "fraud" / "kfloop.yaml"
VIEW = "customer_activity"
STORES = ("sqlite", "redis")
#: Which online store a run measures (see the module docstring).
STORE_ENV = "KFLOOP_BENCH_STORE"
REDIS_ENV = "REDIS_CONNECTION_STRING"
FLOOR_BATCH = 10_000  # redis floor: commands per pipeline round trip
SPAN = timedelta(days=7)  # event times of the synthetic rows


def selected_store() -> str:
    store = os.environ.get(STORE_ENV, "sqlite")
    if store not in STORES:
        raise SystemExit(f"{STORE_ENV}={store!r}: expected one of {', '.join(STORES)}")
    return store


# --- config and data ------------------------------------------------------------------------------


def bench_config(store: str) -> Config:
    """The fraud example's config with ``features.online_store`` set to ``store``."""
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["features"]["online_store"] = {"type": store}
    return parse_config(data, "bench")


def store_environ(server: RedisServer | None) -> dict[str, str]:
    return {REDIS_ENV: server.address} if server is not None else {}


def view_spec(config: Config, name: str = VIEW) -> FeatureViewSpec:
    return next(v for v in config.features.views if v.name == name)


def feature_table(spec: FeatureViewSpec, rows: int, seed: int) -> pa.Table:
    """One row per distinct entity ("c-0000001"…) with plausible values for every feature of ``spec``.

    Sorted by (event_timestamp, entity) like the feature stage's output; ~5 % of the optional
    features are null (a customer's first transaction has no previous one).
    """
    rng = np.random.default_rng(seed)
    width = max(7, len(str(rows)))
    ids = pa.array([f"c-{i:0{width}d}" for i in range(1, rows + 1)])
    offsets = rng.integers(0, int(SPAN.total_seconds() * 1e6), rows)
    start_us = int(DEFAULT_START.timestamp() * 1e6)
    order = np.lexsort((np.arange(rows), offsets))
    columns: dict[str, pa.Array] = {
        spec.entity: ids.take(pa.array(order)),
        "event_timestamp": pa.array(start_us + offsets[order], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    counts = rng.integers(1, 60, rows)
    for agg in spec.aggregates:
        for fn in agg.functions:
            for w in agg.windows:
                name = f"{agg.column}_{fn}_{w}"
                if fn in ("count", "count_distinct"):
                    columns[name] = pa.array(np.maximum(1, counts // rng.integers(1, 4, rows)))
                else:
                    values = np.round(rng.gamma(2.0, 40.0, rows) * (counts if fn == "sum" else 1), 2)
                    columns[name] = pa.array(values, pa.float64())
    if spec.time_since_previous:
        gaps = rng.exponential(86_400.0, rows)
        columns["seconds_since_previous"] = pa.array(gaps, pa.float64(), mask=rng.random(rows) < 0.05)
    return pa.table(columns)


def _data_version() -> str:
    return hashlib.sha256(inspect.getsource(feature_table).encode()).hexdigest()[:8]


def source_parquet(spec: FeatureViewSpec, rows: int, seed: int, data_dir: Path) -> Path:
    """The view's offline table for (rows, seed), generated once and cached (zstd, like the stage)."""
    path = data_dir / f"materialize-{spec.name}-{rows}-{seed}-{_data_version()}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(feature_table(spec, rows, seed), tmp, compression="zstd")
        tmp.replace(path)
    return path


# --- per-repeat workspaces ------------------------------------------------------------------------


@dataclass
class Workspace:
    """A fresh workspace holding the offline table and its state, Feast objects applied."""

    root: Path
    storage: LocalStorage
    store: FeatureStore


@dataclass
class Setup:
    """What every case of one run shares."""

    config: Config
    spec: FeatureViewSpec
    source: Path
    rows: int
    start: datetime
    end: datetime
    server: RedisServer | None
    environ: dict[str, str]
    expected: dict[str, Any] = field(default_factory=dict)  # one entity's stored bytes, for the checks

    def workspace(self) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix="kfloop-bench-materialize-"))
        storage = LocalStorage(root)
        storage.upload_file(self.source, offline_key(self.spec.name))
        ViewState(view=self.spec.name, computed_until=self.end.isoformat(), offline_rows=self.rows).save(storage)
        if self.server is not None:
            self.server.flush()
        store = open_store(self.config, storage, self.environ)
        with _quiet():
            store.apply(objects_for(self.config, storage).all)
        return Workspace(root, storage, store)

    def cleanup(self, work: Workspace) -> None:
        try:
            check_written(self, work)
        finally:
            if self.server is not None:
                self.server.flush()
            shutil.rmtree(work.root, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Feast prints progress bars and banners; keep the benchmark's output readable."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# --- ours and peer --------------------------------------------------------------------------------


def run_ours(s: Setup, work: Workspace) -> None:
    (result,) = [r for r in materialize(s.config, work.storage, s.environ, work.store) if r.view == s.spec.name]
    if result.rows_written != s.rows:
        raise AssertionError(f"ours wrote {result.rows_written:,} rows, expected {s.rows:,}")


def run_peer(s: Setup, work: Workspace) -> None:
    with _quiet():
        work.store.materialize(s.start, s.end, feature_views=[s.spec.name])


# --- floor: Feast's format, pre-serialized ---------------------------------------------------------


@dataclass(frozen=True)
class SqliteRows:
    """Feast's SQLite rows as statement parameters, one tuple per entity in key order (the cheapest order and
    statement to store them: see ``kfloop.feature_repo.online_write``)."""

    upsert: str
    features: list[str]
    params: list[tuple[Any, ...]]  # (entity key, value_1, text_1, …, value_n, text_n, event_ts)


@dataclass(frozen=True)
class RedisRows:
    """Feast's Redis hashes already in the wire protocol: ``HSET`` commands, ``FLOOR_BATCH`` per chunk."""

    chunks: list[tuple[bytes, int]]  # (packed commands, how many)
    first: tuple[bytes, dict[bytes, bytes]]  # one entity's key and hash, for the checks


def _feast_rows(s: Setup) -> Iterator[tuple[Any, ...]]:
    """The rows as Feast's own Arrow→proto conversion produces them (what every case stores), a slice at a
    time: a million rows of protos at once would take gigabytes."""
    objects = objects_for(s.config, LocalStorage(s.source.parent))  # only names the sources: nothing written
    view: FeatureView = objects.view(s.spec.name)
    (entity,) = [e for e in objects.entities if e.join_key == s.spec.entity]
    value_type: ValueType = entity.value_type
    for batch in pq.read_table(s.source).to_batches(max_chunksize=FLOOR_BATCH):
        yield from _convert_arrow_to_proto(batch, view, {s.spec.entity: value_type})


def sqlite_rows(s: Setup, data: Iterable[tuple[Any, ...]]) -> SqliteRows:
    """Serialized by Feast's own code (``serialize_entity_key``, ``SerializeToString``, ``extract_text_and_num``,
    the datetime adapter Feast registers with sqlite3), sorted by entity key."""
    features = s.spec.feature_names()
    params = []
    for entity_key, row, ts, _ in data:
        values: list[Any] = [serialize_entity_key(entity_key, entity_key_serialization_version=3)]
        for name in features:
            val = row[name]
            values += [val.SerializeToString(), extract_text_and_num(val, False)[0]]
        params.append((*values, _sqlite_ts(ts)))
    params.sort(key=lambda p: p[0])
    return SqliteRows(sqlite_upsert_sql(_sqlite_table(s), features), features, params)


def _sqlite_ts(ts: datetime) -> int:
    """What sqlite3 stores for Feast's naive UTC datetime: Feast registers ``int(dt.timestamp())`` as its adapter."""
    return int(to_naive_utc(ts).timestamp())


def _sqlite_table(s: Setup) -> str:
    return f"{feast_project(s.config)}_{s.spec.name}"


def redis_rows(s: Setup, data: Iterable[tuple[Any, ...]]) -> RedisRows:
    project, view = feast_project(s.config), s.spec.name
    fields: dict[str, bytes] = {}
    packer = redis.Connection()  # never connected: only its protocol encoder
    chunks: list[tuple[bytes, int]] = []
    commands: list[tuple[Any, ...]] = []
    first: tuple[bytes, dict[bytes, bytes]] | None = None
    for entity_key, row, ts, _ in data:
        ts_proto = Timestamp()
        ts_proto.FromDatetime(ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts)
        mapping: dict[bytes, bytes] = {f"_ts:{view}".encode(): ts_proto.SerializeToString()}
        for name, val in row.items():
            f_key = fields.get(name)
            if f_key is None:
                f_key = fields[name] = _mmh3(f"{view}:{name}")
            mapping[f_key] = val.SerializeToString()
        key = _redis_key(project, entity_key, entity_key_serialization_version=3)
        first = first or (key, mapping)
        commands.append(("HSET", key, *(x for kv in mapping.items() for x in kv)))
        if len(commands) == FLOOR_BATCH:
            chunks.append((b"".join(packer.pack_commands(commands)), len(commands)))
            commands = []
    if commands:
        chunks.append((b"".join(packer.pack_commands(commands)), len(commands)))
    assert first is not None
    return RedisRows(chunks, first)


def run_sqlite_floor(s: Setup, rows: SqliteRows, work: Workspace) -> None:
    """One transaction of ``executemany`` over Feast's table, through a plain sqlite3 connection."""
    conn = sqlite3.connect(work.root / FEAST_DIR / "online.db")
    try:
        with conn:
            conn.executemany(rows.upsert, rows.params)
    finally:
        conn.close()


def run_redis_floor(s: Setup, rows: RedisRows, work: Workspace) -> None:
    """The packed commands sent on one connection, every reply read (as a redis-py pipeline does)."""
    assert s.server is not None
    client = s.server.client()
    conn = client.connection_pool.get_connection()
    try:
        for packed, count in rows.chunks:
            conn.send_packed_command([packed])
            for _ in range(count):
                conn.read_response()
    finally:
        client.connection_pool.release(conn)
        client.close()


# --- checks (in the untimed teardown) --------------------------------------------------------------


def check_written(s: Setup, work: Workspace) -> None:
    """Every entity stored, and one of them byte for byte as the floor stores it (Feast's serialization)."""
    if s.server is None:
        conn = sqlite3.connect(work.root / FEAST_DIR / "online.db")
        try:
            table = _sqlite_table(s)
            (count,) = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            key = s.expected["key"]
            sql = f'SELECT feature_name, value, value_text, event_ts FROM "{table}" WHERE entity_key = ?'
            stored: dict = {name: rest for name, *rest in conn.execute(sql, (key,))}
            stored = {name: tuple(rest) for name, rest in stored.items()}
        finally:
            conn.close()
        want = s.rows * len(s.spec.feature_names())
        if count != want:
            raise AssertionError(f"sqlite holds {count:,} feature rows, expected {want:,}")
    else:
        client = s.server.client()
        try:
            count = client.dbsize()
            stored = client.hgetall(s.expected["key"])
        finally:
            client.close()
        if count != s.rows:
            raise AssertionError(f"redis holds {count:,} keys, expected {s.rows:,}")
    if stored != s.expected["values"]:
        raise AssertionError("one entity's stored row differs from Feast's serialization")


def _expected(s: Setup, floor: SqliteRows | RedisRows) -> dict[str, Any]:
    if isinstance(floor, SqliteRows):
        key, *rest = floor.params[len(floor.params) // 2]
        ts = rest[-1]
        first = {name: (rest[2 * f], rest[2 * f + 1], ts) for f, name in enumerate(floor.features)}
        return {"key": key, "values": first}
    key, mapping = floor.first
    return {"key": key, "values": mapping}


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Generate (cached) the offline table, start Redis if selected, pre-serialize the floor's rows."""
    import feast

    store = selected_store()
    n = rows or ROWS
    config = bench_config(store)
    spec = view_spec(config)
    source = source_parquet(spec, n, seed, data_dir or ROOT / ".kfloop" / "bench" / "data")
    ts = pq.read_table(source, columns=["event_timestamp"]).column("event_timestamp")
    start = pc.min(ts).as_py()
    end = pc.max(ts).as_py() + timedelta(seconds=1)
    server = start_redis() if store == "redis" else None
    s = Setup(config, spec, source, n, start, end, server, store_environ(server))

    data = _feast_rows(s)
    floor_rows: SqliteRows | RedisRows = sqlite_rows(s, data) if store == "sqlite" else redis_rows(s, data)
    s.expected = _expected(s, floor_rows)

    if isinstance(floor_rows, SqliteRows):
        sql_rows = floor_rows

        def floor(w: Workspace) -> None:
            run_sqlite_floor(s, sql_rows, w)

        floor_name = "sqlite executemany (pre-serialized)"
    else:
        hash_rows = floor_rows

        def floor(w: Workspace) -> None:
            run_redis_floor(s, hash_rows, w)

        floor_name = "redis pipelined HSET (pre-serialized)"

    cases: list[Case[Workspace]] = [
        Case(f"kfloop materialize → {store}", "ours", lambda w: run_ours(s, w), s.workspace, s.cleanup),
        Case(f"feast materialize → {store}", "peer", lambda w: run_peer(s, w), s.workspace, s.cleanup),
        Case(floor_name, "floor", floor, s.workspace, s.cleanup),
    ]
    params: Mapping[str, Any] = {
        "store": store,
        "seed": seed,
        "view": spec.name,
        "features": len(spec.feature_names()),
        "source": str(source),
        "source_bytes": source.stat().st_size,
        "config": str(CONFIG_PATH),
        "feast": feast.__version__,
        "redis_py": redis.__version__,
        "pyarrow": pa.__version__,
    }
    if server is not None:
        params = {**params, "redis_server": _redis_version()}
    return Benchmark(
        f"materialize_{store}",
        f"{n:,} distinct entities x {len(spec.feature_names())} features → {store} online store",
        cases,
        rows=n,
        aims={"peer": 2.0, "floor": 1 / 3},
        params=params,
    )


def _redis_version() -> str:
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()
