"""Consumer restart: `kfloop stream run` killed with SIGKILL mid-stream, then started again, loses no event and
counts none twice: the lake holds every event once, and the online values equal the batch computation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from kfloop.storage.local import LocalStorage
from kfloop.stream.sources import send_events
from kfloop.stream.worker import open_worker
from tests.feature_repo.harness import demo_frames, feature_config, sqlite_backend
from tests.stream.conftest import assert_lake_holds_each_once, assert_online_equals_batch, stream_edit
from tests.stream.test_stream_batch_equality import _records


def _read(client, group: str, key: str) -> int:
    groups = client.xinfo_groups(key) if client.exists(key) else []
    return next((int(g["entries-read"] or 0) for g in groups if g["name"].decode() == group), 0)


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path: Path, redis_server) -> None:
    redis_server.flush()
    workspace = tmp_path / "ws"

    def edit(data: dict) -> None:
        stream_edit(redis_server)(data)
        data["stream"].update(batch_size=50, archive_rows=150)  # several archives (and acks) before the kill

    config = feature_config(workspace, sqlite_backend(), edit)
    path = tmp_path / "kfloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    env = {**os.environ, "KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0", "KFLOOP_STREAM_CONSUMER": "w1"}
    early, _ = demo_frames(rows=600, seed=3, cut_day=90)
    records = _records(early)
    send_events(config, records, env)
    client, key, group = redis_server.client(), config.stream.stream_key(config.project), config.stream.redis.group

    cmd = [sys.executable, "-m", "kfloop", "stream", "run", "-c", str(path), "--metrics-port", "0"]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while _read(client, group, key) < 350:  # killed after some archives, mid-way through the rest
        assert worker.poll() is None, worker.stdout.read().decode()
        assert time.monotonic() < deadline, "the worker read nothing"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    pending = client.xpending(key, group)["pending"]
    assert pending > 0, "the kill left records read but not archived (the case under test)"

    again = subprocess.run([*cmd, "--until-idle"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert client.xpending(key, group)["pending"] == 0

    storage = LocalStorage(workspace)
    assert_lake_holds_each_once(config, storage, records)
    assert_online_equals_batch(config, storage, env)


def test_two_workers_of_one_group_agree_with_batch(tmp_path: Path, redis_server, monkeypatch) -> None:
    """Redis Streams hands one entity's records to whichever worker reads next: two workers (threads here, each
    with its own connections, store and consumer name) updating the same histories at once must still end with
    the batch computation (optimistic transactions, recomputed on conflict), and the lake with every event once."""
    redis_server.flush()
    workspace = tmp_path / "ws"

    def edit(data: dict) -> None:
        stream_edit(redis_server)(data)
        data["stream"].update(batch_size=20, archive_rows=200)

    config = feature_config(workspace, sqlite_backend(), edit)
    env = {"KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0"}
    records = _records(demo_frames(rows=700, seed=4, cut_day=90)[0])
    send_events(config, records, env)
    workers = []
    for i in range(2):
        monkeypatch.setenv("KFLOOP_STREAM_CONSUMER", f"w{i}")
        workers.append(open_worker(config, LocalStorage(workspace), env))
    with ThreadPoolExecutor(2) as pool:
        stats = list(pool.map(lambda w: w.run(until_idle=True), workers))
    assert all(s.records > 0 for s in stats) and sum(s.records for s in stats) >= len(records)

    storage = LocalStorage(workspace)
    assert_lake_holds_each_once(config, storage, records)
    assert_online_equals_batch(config, storage, env)
