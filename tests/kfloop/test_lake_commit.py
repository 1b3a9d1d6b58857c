"""Overlapping lake writers, in real processes: concurrent ingests, a lease holder killed mid-commit,
ingest during validate, readers of a replaced manifest, and cleanup that spares live runs' files."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake, lake_commit, layout
from kfloop.components.ingest import ingest
from kfloop.components.validate import validate
from kfloop.config import Config
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.errors import LeaseBusyError
from kfloop.layout import clean_dataset
from kfloop.storage import LocalStorage, S3Storage, Storage
from kfloop.storage._process import host_identity
from kfloop.storage.lease import lease
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
    elsewhere: bool = False,
) -> None:
    """Ingest ``source``. Test hooks: ``barrier`` holds every run at its commit until all have staged (so
    they truly overlap); ``stalled`` is set once the run holds the lease mid-commit, where it then hangs;
    ``elsewhere`` makes the run record another machine's identity (a pod on another node), so its death can
    only be judged by its silence."""
    if elsewhere:
        import sys

        lease_module = sys.modules["kfloop.storage.lease"]  # the package exports a function of that name
        lease_module.host_identity = lambda: "another-node/boot/pid:[1]"  # type: ignore[assignment]
        lake_commit.host_identity = lambda: "another-node/boot/pid:[1]"  # type: ignore[assignment]
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


def validate_while(storage: Storage, cfg: Config, during: Callable[[], Any]) -> tuple[dict, Any]:
    """Validate in a child process, calling ``during`` after it read its lake snapshot and before it scans."""
    snapshot_taken, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_validate_child, args=(cfg, spec_of(storage), snapshot_taken, go, out))
    child.start()
    try:
        assert snapshot_taken.wait(120), "validate never started"
        done = during()
    finally:
        go.set()
    result = out.get(timeout=240)
    child.join(timeout=30)
    assert child.exitcode == 0 and "error" not in result, result
    return result, done


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


def _kill_while_committing(tmp_path: Path, policy: lake_commit.CommitPolicy, elsewhere: bool) -> tuple:
    """An ingest SIGKILLed while it holds the dataset lease mid-commit; returns what the next run needs."""
    (early, late), frame = split_sources(tmp_path, 2, 2000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(early))
    ingest(cfg, storage)
    before = storage.read_text(layout.manifest_key(DATASET))
    stalled, out = SPAWN.Event(), SPAWN.Queue()
    args = (cfg, spec_of(storage), str(late), policy, out, None, stalled, elsewhere)
    child = SPAWN.Process(target=_ingest_child, args=args)
    child.start()
    assert stalled.wait(120), "the child never reached its commit"
    assert storage.list(f"lake/{DATASET}/_lock/")  # it holds the lease, with files staged
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert storage.read_text(layout.manifest_key(DATASET)) == before  # killed mid-commit: nothing visible
    return storage, cfg, late, frame


def test_run_killed_holding_the_lease_is_taken_over_after_staleness(tmp_path: Path) -> None:
    policy = lake_commit.CommitPolicy(stale_after_s=1.5, timeout_s=60)
    storage, cfg, late, frame = _kill_while_committing(tmp_path, policy, elsewhere=True)
    t0 = time.monotonic()
    done = ingest(cfg, storage, source_uri=str(late), policy=policy)  # waits out the staleness, takes over
    assert time.monotonic() - t0 >= 1.0
    assert not done.already_ingested and done.dataset_rows == len(frame)
    got = read_rows(storage, assert_consistent(storage))  # the dead run's staged files were swept
    assert len(got) == len(frame) and got["transaction_id"].is_unique


def test_run_killed_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    policy = lake_commit.CommitPolicy(stale_after_s=60, timeout_s=30)  # far longer than the test may take
    storage, cfg, late, frame = _kill_while_committing(tmp_path, policy, elsewhere=False)
    t0 = time.monotonic()
    done = ingest(cfg, storage, source_uri=str(late), policy=policy)  # its pid is gone here: no need to wait
    assert time.monotonic() - t0 < 30
    assert not done.already_ingested and done.dataset_rows == len(frame)
    assert len(read_rows(storage, assert_consistent(storage))) == len(frame)


def test_cleanup_spares_a_live_run_and_sweeps_it_once_silent(tmp_path: Path) -> None:
    (first, second, third), _ = split_sources(tmp_path, 3, 1500, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(first))
    policy = lake_commit.CommitPolicy(stale_after_s=30)
    ingest(cfg, storage, policy=policy)
    # a run on another host: heartbeat written, a file staged, not committed yet
    other = "20260101T000000Z-other1"
    staged = layout.part_key(DATASET, "2026-01-01", other, 0)
    quarantined = f"quarantine/{DATASET}/{other}.parquet"
    heartbeat = layout.active_key(DATASET, other)
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
    first, _ = validate_while(storage, cfg, lambda: ingest(cfg, storage, source_uri=str(late)))  # M+1 during M
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

    def ingest_then_validate() -> Any:
        ingest(cfg, storage, source_uri=str(late))
        return validate(cfg, storage)  # validates both commits and finishes first

    older, newer = validate_while(storage, cfg, ingest_then_validate)
    assert older["rows_in"] == len(frame) // 2 < newer.report.rows_in == len(frame)
    clean = assert_consistent(storage, CLEAN)
    assert clean.rows == newer.report.rows_clean  # the slow run's older snapshot was discarded
    assert clean.runs[-1]["input_commits"] == 2


def test_a_live_run_on_another_machine_with_the_same_hostname_is_spared(tmp_path: Path) -> None:
    """Hostname and PID namespace do not name a machine (every host's initial namespace has one inode number):
    a fresh heartbeat from a machine sharing our hostname is alive although its PID does not exist here. A run of
    this very host whose process exited is still swept at once."""
    (first, second), _ = split_sources(tmp_path, 2, 1000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(first))
    ingest(cfg, storage)
    twin, dead = "20260101T000000Z-twin01", "20260101T000000Z-dead01"
    twin_host = f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid')}"  # what the twin machine calls itself
    exited = SPAWN.Process(target=time.sleep, args=(0,))
    exited.start()
    exited.join()
    for run, host, pid in ((twin, twin_host, 4_000_000), (dead, host_identity(), exited.pid)):
        body = {"run_id": run, "host": host, "pid": pid, "at": lake.now_iso()}
        storage.write_text(layout.active_key(DATASET, run), json.dumps(body))
        storage.write_bytes(layout.part_key(DATASET, "2026-01-01", run, 0), b"staged")
    ingest(cfg, storage, source_uri=str(second))
    assert storage.exists(layout.part_key(DATASET, "2026-01-01", twin, 0))
    assert not storage.exists(layout.part_key(DATASET, "2026-01-01", dead, 0))


def test_a_run_killed_between_its_run_record_and_the_manifest_leaves_no_record(tmp_path: Path) -> None:
    (first, second), _ = split_sources(tmp_path, 2, 1000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(first))
    ingest(cfg, storage)
    gone = "20260101T000000Z-gone01"  # wrote _runs/<run>.json, died before _manifest.json: never committed
    storage.write_text(f"lake/{DATASET}/_runs/{gone}.json", json.dumps({"run_id": gone}))
    done = ingest(cfg, storage, source_uri=str(second))
    manifest = assert_consistent(storage)
    records = sorted(k.rsplit("/", 1)[-1].removesuffix(".json") for k in storage.list(f"lake/{DATASET}/_runs/"))
    assert records == sorted(r["run_id"] for r in manifest.runs) and done.run_id in records


def test_the_run_heartbeat_survives_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "ws")
    beats: list[float] = []
    real = lake_commit.Transaction._write_heartbeat

    def flaky(self: lake_commit.Transaction) -> None:
        beats.append(time.monotonic())
        if len(beats) == 2:  # the first beat of the thread
            raise RuntimeError("a bug, or an error no storage wraps")
        real(self)

    monkeypatch.setattr(lake_commit.Transaction, "_write_heartbeat", flaky)
    with lake_commit.transaction(storage, DATASET, "r1", policy=lake_commit.CommitPolicy(stale_after_s=0.2)) as txn:
        time.sleep(0.5)
        assert txn._beat is not None and txn._beat.is_alive() and len(beats) >= 4


def test_a_run_starting_during_the_sweep_keeps_its_quarantine_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidates are listed before the live runs: a run that announces itself and stores its quarantine file
    right after the sweep read the heartbeats is not taken for a dead one."""
    (first, second), _ = split_sources(tmp_path, 2, 1000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(first))
    ingest(cfg, storage)
    newcomer = "20260101T000000Z-new001"
    quarantined = f"quarantine/{DATASET}/{newcomer}.parquet"
    real = lake_commit.Transaction._live_runs

    def then_a_run_starts(self: lake_commit.Transaction, now: Any) -> set[str]:
        live = real(self, now)
        body = {"run_id": newcomer, "host": "elsewhere", "pid": 1, "at": lake.now_iso()}
        storage.write_text(layout.active_key(DATASET, newcomer), json.dumps(body))
        storage.write_bytes(quarantined, b"staged by the newcomer")
        return live

    monkeypatch.setattr(lake_commit.Transaction, "_live_runs", then_a_run_starts)
    ingest(cfg, storage, source_uri=str(second))
    assert storage.exists(quarantined)


def test_validate_after_the_lake_was_rebuilt_replaces_the_clean_data(tmp_path: Path) -> None:
    """The older-snapshot guard compares snapshots of one lake: after the lake is deleted and ingested again (fewer
    commits than the clean dataset's input), validation still replaces the clean dataset."""
    parts, _ = split_sources(tmp_path, 3, 3000, by_time=True)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(parts[0]))
    for part in parts:
        ingest(cfg, storage, source_uri=str(part))
    assert validate(cfg, storage).report.rows_clean == 3000
    for key in storage.list(f"lake/{DATASET}/"):
        storage.delete(key)
    ingest(cfg, storage)  # the lake again, from the first file only
    result = validate(cfg, storage)
    clean = assert_consistent(storage, CLEAN)
    assert result.report.rows_clean == clean.rows == 1000
    assert clean.runs[-1]["run_id"] == result.report.run_id


def test_an_ingest_into_a_busy_dataset_says_who_holds_it_and_leaves_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While it waits for the commit lease the run says why it stands still; when the wait runs out the error names
    the dataset and the holder, and the staged files go. The next run ingests the same file in full."""
    (src,), frame = split_sources(tmp_path, 1, 500)
    ws = tmp_path / "ws"
    storage, cfg = LocalStorage(ws), demo_config(ws, uri=str(src))
    holder = "20260101T000000Z-hold01"
    with (
        caplog.at_level(logging.WARNING),
        lease(storage, layout.lake_lock_key(DATASET), name=f"dataset {DATASET}", owner=holder),
        pytest.raises(LeaseBusyError, match=f"dataset {DATASET} is busy: held by run {holder}"),
    ):
        ingest(cfg, storage, policy=lake_commit.CommitPolicy(timeout_s=3))
    waiting = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waiting) == 1 and holder in waiting[0] and f"dataset {DATASET} is busy" in waiting[0]
    assert storage.list(f"lake/{DATASET}/data/") == [] and storage.list(f"lake/{DATASET}/_active/") == []
    assert ingest(cfg, storage).dataset_rows == len(frame)
