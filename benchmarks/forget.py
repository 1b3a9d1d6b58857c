"""Forget benchmark: erase one customer from a 1M-row workspace, then search every store for traces.

The workspace (demo rows with a few defects → ingest → validate → features → materialize into SQLite → a training
set → a registered version, plus inference-log files holding every customer) is built once into
``.bench/forget-<rows>-<seed>/`` and copied for each repeat (untimed). The customer with the most rows is erased.

- ours:  ``kfloop.forget.forget``: raw and clean lake through their manifests under the dataset leases, quarantine,
         quality-report examples, offline features, online rows (Feast's key encoding), inference log, training
         sets, tombstone, audit record.
- peer:  what a user does without it: pandas reads and rewrites every Parquet file of the workspace filtered
         (DuckDB/pandas style), and Feast's only online delete drops the views' whole tables (every entity's
         values are gone until a full re-materialization, which is not timed here).
- floor: the files known (untimed) to hold the customer, filtered with pyarrow and written back, and one
         SQLite ``DELETE`` per view table: the least work that removes the same rows.

The teardown searches every store (lake raw + clean, quarantine, offline features, training sets, inference log,
the online store, text objects) and prints the traces found; ours must leave 0. Aim (from the issue): ≤ 10 s.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from kfloop import layout
from kfloop.config import Config, load_config, parse_config
from kfloop.forget import forget, parse_target
from kfloop.forget.search import DATA_ROOTS, traces
from kfloop.storage import LocalStorage

ROWS = 1_000_000
SEED = 42
CONFIG_PATH = ROOT / "examples" / "fraud" / "kfloop.yaml"
CACHE = ROOT / ".bench"
KEY = "customer_id"
LOG_ROWS = 200_000  # inference-log rows (every customer appears)


def bench_config(root: Path) -> Config:
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(root)}
    data["features"]["online_store"] = {"type": "sqlite"}
    return parse_config(data, "bench")


def _build_workspace(root: Path, rows: int, seed: int) -> None:
    """ingest → validate → features → materialize → training set → a registered version, and an inference log."""
    from kfloop.components.features import compute_features
    from kfloop.components.ingest import ingest
    from kfloop.components.materialize import materialize
    from kfloop.components.training_set import build_training_set
    from kfloop.components.validate import validate
    from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
    from kfloop.registry import ModelRegistry
    from kfloop.serving.log_table import TIMESTAMP, inference_log_schema, log_prefix

    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config, storage = bench_config(tmp), LocalStorage(tmp)
    frame = generate(DemoSpec(rows=rows, seed=seed, defects=DefectSpec(out_of_range=0.002))).frame
    source = tmp.parent / f"{tmp.name}-source.csv"
    tmp.mkdir(parents=True)
    write_frame(frame, source, "csv")
    ingest(config, storage, source_uri=str(source))
    validate(config, storage)
    compute_features(config, storage)
    materialize(config, storage, {})
    ts = build_training_set(config, storage, {})
    files = tmp.parent / f"{tmp.name}-model"
    files.mkdir(exist_ok=True)
    (files / "model.bin").write_bytes(b"placeholder weights")
    ModelRegistry(storage, config.training.model_name).register(files, {"training_set": {"run_id": ts.run_id}})
    schema = inference_log_schema(config)
    sample = frame.sample(min(LOG_ROWS, len(frame)), random_state=seed)
    for day, part in sample.groupby(sample["event_timestamp"].dt.date):
        cols = {f.name: pa.nulls(len(part), f.type) for f in schema}
        cols[TIMESTAMP] = pa.array(part["event_timestamp"]).cast(schema.field(TIMESTAMP).type)
        for c in config.source.entity_keys:
            cols[c] = pa.array(part[c].astype(str))
        local = tmp.parent / f"{tmp.name}-log.parquet"
        pq.write_table(pa.table(cols, schema=schema), local, compression="zstd")
        storage.upload_file(local, f"{log_prefix(config)}/date={day}/part-0.parquet")
    (tmp.parent / f"{tmp.name}-log.parquet").unlink(missing_ok=True)
    source.unlink()
    shutil.rmtree(files)
    tmp.rename(root)


def _busiest(root: Path, config: Config) -> str:
    from kfloop import lake

    manifest = lake.read_manifest(LocalStorage(root), config.source.dataset)
    assert manifest is not None
    counts = pc.value_counts(
        pa.concat_arrays(
            [pq.read_table(root / f.key, columns=[KEY]).column(KEY).combine_chunks() for f in manifest.files]
        )
    )
    return max(counts.to_pylist(), key=lambda c: c["counts"])["values"]


@dataclass
class Work:
    root: Path
    config: Config
    storage: LocalStorage


@dataclass
class Setup:
    cache: Path
    value: str
    hits: list[str]  # the Parquet files holding the customer (the floor's input, found untimed)
    traces: dict[str, dict[str, int]]

    def work(self) -> Work:
        root = Path(tempfile.mkdtemp(prefix="kfloop-bench-forget-")) / "ws"
        shutil.copytree(self.cache, root)
        return Work(root, bench_config(root), LocalStorage(root))

    def teardown(self, case: str) -> object:
        def done(w: Work) -> None:
            try:
                found = traces(w.config, w.storage, parse_target(w.config, f"{KEY}={self.value}"), {})
                self.traces[case] = found
                print(f"   {case}: traces after erase: {found}", flush=True)
                if case == "ours" and sum(found.values()):
                    raise AssertionError(f"kfloop forget left traces: {found}")
            finally:
                shutil.rmtree(w.root.parent, ignore_errors=True)

        return done


def _parquet_files(storage: LocalStorage, config: Config) -> list[str]:
    from kfloop.serving.log_table import log_prefix

    keys = [k for r in (*DATA_ROOTS, log_prefix(config)) for k in storage.list(r + "/")]
    return [k for k in keys if k.endswith(".parquet")]


def run_ours(s: Setup, w: Work) -> None:
    forget(w.config, w.storage, f"{KEY}={s.value}", environ=os.environ)


def run_peer(s: Setup, w: Work) -> None:
    """pandas over every Parquet file, then Feast's entity-type-wide online delete (drop the views' tables)."""
    from kfloop.feature_repo.store import objects_for, open_store

    for key in _parquet_files(w.storage, w.config):
        path = w.root / key
        frame = pd.read_parquet(path)
        if KEY in frame.columns:
            frame[frame[KEY] != s.value].to_parquet(path, index=False, compression="zstd")
    store = open_store(w.config, w.storage, {})
    objects = objects_for(w.config, w.storage)
    views = [v for v in objects.views if KEY in [e for e in v.join_keys]]
    store._get_provider().online_store.update(store.config, views, [], [], [], partial=False)


def run_floor(s: Setup, w: Work) -> None:
    for key in s.hits:
        path = w.root / key
        table = pq.read_table(path)
        pq.write_table(
            table.filter(pc.invert(pc.fill_null(pc.equal(table[KEY], s.value), False))), path, compression="zstd"
        )
    conn = sqlite3.connect(w.root / layout.FEAST_DIR / layout.FEAST_SQLITE_FILE)
    try:
        key = _sqlite_key(s.value)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        with conn:
            for t in tables:
                conn.execute(f'DELETE FROM "{t}" WHERE entity_key = ?', (key,))
    finally:
        conn.close()


def _sqlite_key(value: str) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return serialize_entity_key(
        EntityKey(join_keys=[KEY], entity_values=[Value(string_val=value)]), entity_key_serialization_version=3
    )


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    n = rows or ROWS
    cache = CACHE / f"forget-{n}-{seed}"
    if not cache.is_dir():
        print(f"   building the {n:,}-row workspace once into {cache}", flush=True)
        _build_workspace(cache, n, seed)
    config = bench_config(cache)
    value = _busiest(cache, config)
    storage = LocalStorage(cache)
    from kfloop.forget.parquet import scan

    with tempfile.TemporaryDirectory() as tmp:
        hits = [
            h.key
            for h in scan(storage, _parquet_files(storage, config), parse_target(config, f"{KEY}={value}"), Path(tmp))
            if KEY in pq.read_schema(cache / h.key).names
        ]
    s = Setup(cache, value, hits, {})
    before = traces(config, storage, parse_target(config, f"{KEY}={value}"), {})
    print(f"   erasing {KEY}={value}: {sum(before.values()):,} traces before ({before})", flush=True)
    cases = [
        Case("kfloop forget", "ours", lambda w: run_ours(s, w), s.work, s.teardown("ours")),
        Case(
            "pandas rewrite of every file + Feast drop of the views",
            "peer",
            lambda w: run_peer(s, w),
            s.work,
            s.teardown("peer"),
        ),
        Case(
            "pyarrow filter+write of the known files + DELETE",
            "floor",
            lambda w: run_floor(s, w),
            s.work,
            s.teardown("floor"),
        ),
    ]
    params = {
        "seed": seed,
        "customer": value,
        "files_with_customer": len(hits),
        "traces_before": before,
        "workspace": str(cache),
        "aim_seconds": 10,
    }
    return Benchmark("forget", f"erase one customer from a {n:,}-row workspace", cases, rows=n, params=params)
