"""Overlapping lake writers, in real processes: concurrent ingests, a lease holder killed mid-commit,
ingest during validate, readers of a replaced manifest, and cleanup that spares live runs' files."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake, lake_commit
from kfloop.components.ingest import ingest
from kfloop.components.validate import clean_dataset, validate
from kfloop.config import Config
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.storage import LocalStorage, S3Storage, Storage
from tests.conftest import S3_CREDS, demo_config

DATASET = "transactions"
CLEAN = clean_dataset(DATASET)
SPAWN = mp.get_context("spawn")  # children start clean: no inherited threads or locks from pytest
StorageSpec = tuple[str, ...]  # ("local", root) or ("s3", endpoint, bucket, prefix)


def open_spec(spec: StorageSpec) -> Storage:
    if spec[0] == "local":
        return LocalStorage(spec[1])
    from minio import Minio

    _, endpoint, bucket, prefix = spec
    client = Minio(endpoint, access_key=S3_CREDS.access_key, secret_key=S3_CREDS.secret_key, secure=False)
    return S3Storage(client, bucket, prefix)


def spec_of(storage: Storage) -> StorageSpec:
    if isinstance(storage, LocalStorage):
        return ("local", str(storage.root))
    assert isinstance(storage, S3Storage)
    url = storage.client._base_url  # the moto endpoint the fixture connected to
    return ("s3", f"{url.host}", storage.bucket, storage.prefix)


# --- children (module level: spawned processes import them) ---------------------------------------------


def _ingest_child(
    cfg: Config,
    spec: StorageSpec,
    source: str,
    policy: lake_commit.CommitPolicy,
    out: Any,
    barrier: Any = None,
    stalled: Any = None,
) -> None:
    """Ingest ``source``. Test hooks: ``barrier`` holds every run at its commit until all have staged (so
    they truly overlap); ``stalled`` is set once the run holds the lease mid-commit, where it then hangs."""
    if barrier is not None:
        real_commit = lake_commit.Transaction.commit

        def commit_after_all_staged(self: lake_commit.Transaction, *args: Any) -> lake.Manifest:
            barrier.wait(timeout=120)
            return real_commit(self, *args)

        lake_commit.Transaction.commit = commit_after_all_staged  # type: ignore[method-assign]
    if stalled is not None:

        def hang(self: lake_commit.Transaction, manifest: lake.Manifest) -> lake.Manifest:
            stalled.set()
            time.sleep(3600)
            return manifest

        lake_commit.Transaction._expire_retired = hang  # type: ignore[method-assign]
    try:
        out.put(ingest(cfg, open_spec(spec), source_uri=source, policy=policy).to_dict())
    except Exception as err:
        out.put({"error": f"{type(err).__name__}: {err}"})


def _validate_child(cfg: Config, spec: StorageSpec, snapshot_taken: Any, go: Any, out: Any) -> None:
    """Validate, pausing right after the lake snapshot is read (while the caller ingests more)."""
    import kfloop.components.validate as stage

    real_scan = stage.scan

    def scan_then_wait(*args: Any) -> Any:
        snapshot_taken.set()
        go.wait(timeout=120)
        return real_scan(*args)

    stage.scan = scan_then_wait  # type: ignore[assignment]
    try:
        result = validate(cfg, open_spec(spec))
        out.put({"rows_in": result.report.rows_in, "rows_clean": result.report.rows_clean})
    except Exception as err:
        out.put({"error": f"{type(err).__name__}: {err}"})


# --- helpers ------------------------------------------------------------------------------------------------


def split_sources(tmp: Path, parts: int, rows: int, by_time: bool = False) -> tuple[list[Path], pd.DataFrame]:
    """One generated frame in ``parts`` CSV files: interleaved rows (same time span in each file), or
    consecutive time ranges with ``by_time``."""
    frame = generate(DemoSpec(rows=rows, seed=11)).frame.sort_values("event_timestamp").reset_index(drop=True)
    paths = []
    for i in range(parts):
        part = frame.iloc[i * rows // parts : (i + 1) * rows // parts] if by_time else frame.iloc[i::parts]
        path = tmp / f"part{i}.csv"
        write_frame(part, path, "csv")
        paths.append(path)
    return paths, frame


def read_rows(storage: Storage, manifest: lake.Manifest) -> pd.DataFrame:
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f.key))) for f in manifest.files]
    return pa.concat_tables(tables).to_pandas()


def assert_consistent(storage: Storage, dataset: str = DATASET) -> lake.Manifest:
    """Every listed file exists with its checksum and row count; nothing unlisted is left behind."""
    manifest = lake.read_manifest(storage, dataset)
    assert manifest is not None
    for f in manifest.files:
        data = storage.read_bytes(f.key)
        assert hashlib.sha256(data).hexdigest() == f.sha256
        assert pq.read_metadata(pa.BufferReader(data)).num_rows == f.rows
        assert len(data) == f.bytes
    assert sum(f.rows for f in manifest.files) == manifest.rows
    listed = {f.key for f in manifest.files} | {r.key for r in manifest.retired}
    assert set(storage.list(f"lake/{dataset}/data/")) == listed
    assert storage.list(f"lake/{dataset}/_active/") == []  # every run finished and said so
    return manifest


def run_children(target: Callable[..., None], arg_sets: list[tuple], timeout: float = 240) -> list[dict]:
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args[:4], out, *args[4:])) for args in arg_sets]
    for p in procs:
        p.start()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [r["error"] for r in results if "error" in r] == []
    return results


def concurrent_ingests(tmp: Path, storage: Storage, cfg: Config) -> None:
    paths, frame = split_sources(tmp, 4, 4000)
    policy = lake_commit.CommitPolicy(timeout_s=120)
    barrier = SPAWN.Barrier(len(paths))
    results = run_children(_ingest_child, [(cfg, spec_of(storage), str(p), policy, barrier) for p in paths])
    # every run read the empty lake's watermark before any commit: all rows land, exactly once
    assert sorted(r["rows_written"] for r in results) == [1000] * 4
    manifest = assert_consistent(storage)
    got = read_rows(storage, manifest)
    assert len(got) == len(frame) and got["transaction_id"].is_unique
    assert set(got["transaction_id"]) == set(frame["transaction_id"])
    assert sorted(r["run_id"] for r in manifest.runs) == sorted(r["run_id"] for r in results)
    assert manifest.watermark == frame["event_timestamp"].max().isoformat()
    again = ingest(cfg, storage, source_uri=str(paths[2]))  # each file is recorded as ingested
    assert again.already_ingested and again.dataset_rows == len(frame)


# --- tests --------------------------------------------------------------------------------------------------


def test_four_concurrent_ingests_land_every_row_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    concurrent_ingests(tmp_path, LocalStorage(ws), demo_config(ws, uri=str(tmp_path / "unused.csv")))


@pytest.mark.s3
def test_four_concurrent_ingests_on_s3(tmp_path: Path, s3_storage: S3Storage) -> None:
    concurrent_ingests(tmp_path, s3_storage, demo_config(None, uri=str(tmp_path / "unused.csv")))


def test_same_file_ingested_twice_at_once_lands_once(tmp_path: Path) -> None:
    (src,), frame = split_sources(tmp_path, 1, 1500)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(src))
    policy = lake_commit.CommitPolicy(timeout_s=120)
    barrier = SPAWN.Barrier(2)
    results = run_children(_ingest_child, [(cfg, spec_of(storage), str(src), policy, barrier)] * 2)
    assert sorted(r["already_ingested"] for r in results) == [False, True]  # the loser saw it under the lease
    manifest = assert_consistent(storage)  # ... and discarded what it had staged
    assert len(manifest.runs) == 1 and manifest.rows == len(frame)


def test_run_killed_holding_the_lease_is_taken_over_after_staleness(tmp_path: Path) -> None:
    (early, late), frame = split_sources(tmp_path, 2, 2000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(early))
    ingest(cfg, storage)
    before = storage.read_text(lake.manifest_key(DATASET))
    policy = lake_commit.CommitPolicy(stale_after_s=1.5, timeout_s=60)
    stalled, out = SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_ingest_child, args=(cfg, spec_of(storage), str(late), policy, out, None, stalled))
    child.start()
    assert stalled.wait(120), "the child never reached its commit"
    assert storage.list(f"lake/{DATASET}/_lock/")  # it holds the lease, with files staged
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert storage.read_text(lake.manifest_key(DATASET)) == before  # killed mid-commit: nothing visible

    t0 = time.monotonic()
    done = ingest(cfg, storage, source_uri=str(late), policy=policy)  # waits out the staleness, takes over
    assert time.monotonic() - t0 >= 1.0
    assert not done.already_ingested and done.dataset_rows == len(frame)
    got = read_rows(storage, assert_consistent(storage))  # the dead run's staged files were swept
    assert len(got) == len(frame) and got["transaction_id"].is_unique


def test_cleanup_spares_a_live_run_and_sweeps_it_once_silent(tmp_path: Path) -> None:
    (first, second, third), _ = split_sources(tmp_path, 3, 1500, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(first))
    policy = lake_commit.CommitPolicy(stale_after_s=30)
    ingest(cfg, storage, policy=policy)
    # a run on another host: heartbeat written, a file staged, not committed yet
    other = "20260101T000000Z-other1"
    staged = lake.part_key(DATASET, "2026-01-01", other, 0)
    quarantined = f"quarantine/{DATASET}/{other}.parquet"
    heartbeat = lake_commit.active_key(DATASET, other)
    storage.write_text(heartbeat, json.dumps({"run_id": other, "host": "elsewhere", "pid": 1}))
    storage.write_bytes(staged, b"not yet committed")
    storage.write_bytes(quarantined, b"not yet committed")
    ingest(cfg, storage, source_uri=str(second), policy=policy)
    assert storage.exists(staged) and storage.exists(quarantined) and storage.exists(heartbeat)
    silent = time.time() - 60  # its heartbeat stopped a minute ago: that run is dead
    os.utime(storage.local_path(heartbeat), (silent, silent))
    ingest(cfg, storage, source_uri=str(third), policy=policy)
    assert not storage.exists(staged) and not storage.exists(quarantined) and not storage.exists(heartbeat)
    assert_consistent(storage)


def test_ingest_during_validate_loses_nothing(tmp_path: Path) -> None:
    (early, late), frame = split_sources(tmp_path, 2, 3000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(early))
    ingest(cfg, storage)
    snapshot_taken, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_validate_child, args=(cfg, spec_of(storage), snapshot_taken, go, out))
    child.start()
    try:
        assert snapshot_taken.wait(120), "validate never started"
        ingest(cfg, storage, source_uri=str(late))  # commits M+1 while validate works on M
    finally:
        go.set()
    first = out.get(timeout=240)
    child.join(timeout=30)
    assert child.exitcode == 0 and "error" not in first, first
    raw = assert_consistent(storage)
    assert raw.rows == len(frame) and len(raw.runs) == 2
    assert first["rows_in"] == len(frame) // 2  # the clean dataset reflects the snapshot it validated
    second = validate(cfg, storage)  # ... and the next run picks up the new commit
    assert not second.already_validated and second.report.rows_in == len(frame)
    clean = read_rows(storage, assert_consistent(storage, CLEAN))
    assert len(clean) == second.report.rows_clean and clean["transaction_id"].is_unique


def test_reader_of_a_replaced_manifest_keeps_its_files_for_the_grace_period(tmp_path: Path) -> None:
    (early, late), _ = split_sources(tmp_path, 2, 2000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(early))
    ingest(cfg, storage)
    validate(cfg, storage)
    old = lake.read_manifest(storage, CLEAN)  # a reader (features, training set, Feast) holds this
    assert old is not None
    ingest(cfg, storage, source_uri=str(late))
    validate(cfg, storage)  # replaces the clean dataset
    now = assert_consistent(storage, CLEAN)
    assert {f.key for f in old.files} <= {r.key for r in now.retired}
    assert len(read_rows(storage, old)) == old.rows  # the old snapshot still reads in full
    assert now.rows > old.rows

    strict = demo_config(ws, uri=str(early), batch_rows=2000)  # another config: validate recomputes
    validate(strict, storage, policy=lake_commit.CommitPolicy(retire_grace_s=0))
    latest = assert_consistent(storage, CLEAN)
    assert latest.retired == [] and not any(storage.exists(f.key) for f in old.files + now.files)


def test_slow_validate_of_an_older_snapshot_never_rolls_the_clean_data_back(tmp_path: Path) -> None:
    (early, late), frame = split_sources(tmp_path, 2, 3000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(early))
    ingest(cfg, storage)
    snapshot_taken, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_validate_child, args=(cfg, spec_of(storage), snapshot_taken, go, out))
    child.start()
    try:
        assert snapshot_taken.wait(120), "validate never started"
        ingest(cfg, storage, source_uri=str(late))
        newer = validate(cfg, storage)  # validates both commits and finishes first
    finally:
        go.set()
    older = out.get(timeout=240)
    child.join(timeout=30)
    assert child.exitcode == 0 and "error" not in older, older
    assert older["rows_in"] == len(frame) // 2 < newer.report.rows_in == len(frame)
    clean = assert_consistent(storage, CLEAN)
    assert clean.rows == newer.report.rows_clean  # the slow run's older snapshot was discarded
    assert clean.runs[-1]["input_commits"] == 2
