"""Freshness where it matters: the lag from each event's timestamp to its online write, per view, as the worker's
Prometheus metrics (scraped over HTTP), as minute samples in the workspace, and in `kfloop features status`."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from kfloop.feature_repo.freshness import FreshnessSample, LagRecorder, read_samples, record_samples
from kfloop.feature_repo.status import feature_status
from kfloop.layout import clean_dataset
from kfloop.monitoring import metric_names as names
from kfloop.storage.local import LocalStorage
from kfloop.stream.sources import send_events
from kfloop.stream.worker import open_worker, serve_metrics
from tests.conftest import free_port
from tests.feature_repo.harness import feature_config, sqlite_backend
from tests.stream.conftest import demo_event, stream_edit

T = datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)


def test_lag_per_event_in_metrics_samples_and_status(tmp_path: Path, redis_server) -> None:
    redis_server.flush()
    config = feature_config(tmp_path / "ws", sqlite_backend(), stream_edit(redis_server))
    env = {"KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0"}
    storage = LocalStorage(tmp_path / "ws")
    # events 2 s and 8 s before the worker's clock: every lag is known exactly
    send_events(config, [demo_event(i, T - timedelta(seconds=2 if i % 2 else 8)) for i in range(40)], env)
    worker = open_worker(config, storage, env)
    worker.clock = lambda: T
    port = free_port()
    serve_metrics(worker.metrics, port)
    worker.run(until_idle=True)

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for view in config.features.views:
        assert f'{names.FEATURE_PUSH_LAG}_count{{project="{config.project}",view="{view.name}"}} 40.0' in body
        assert f'{names.FEATURE_PUSH_LAG}_bucket{{le="2.5",project="{config.project}",view="{view.name}"}} 20.0' in body
        assert f'{names.FEATURE_ONLINE_AGE}{{project="{config.project}",view="{view.name}"}} 2.0' in body
    assert f'{names.STREAM_RECORDS}_total{{outcome="applied",project="{config.project}"}} 40.0' in body

    (sample,) = read_samples(storage, "customer_activity", T - timedelta(hours=1), T + timedelta(hours=1))
    assert (sample.events, sample.lag_max, sample.lag_p50) == (40, 8.0, 5.0)
    assert sample.minute == T.replace(second=0) and sample.newest_event == T - timedelta(seconds=2)

    status = {s.view: s for s in feature_status(config, storage, clean_dataset(config.source.dataset), now=T)}
    row = status["customer_activity"]
    assert row.pushed_events == 40 and row.push_lag_p99 == pytest.approx(8.0) and row.online_age_seconds == 2.0


def test_writers_samples_combine_and_rewrites_replace() -> None:
    recorder = LagRecorder()
    m = T.replace(second=0)
    recorder.add("v", np.array([1.0, 3.0]), T, T)
    recorder.add("v", np.array([2.0]), T, T + timedelta(minutes=1))
    assert [s.minute for s in recorder.closed(T + timedelta(minutes=1))] == [m]  # the open minute stays
    assert [s.minute for s in recorder.closed()] == [m + timedelta(minutes=1)]


def test_samples_of_several_writers(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    m = T.replace(second=0)
    record_samples(storage, [FreshnessSample("v", m, 10, 1.0, 2.0, 3.0, T)], writer="a")
    record_samples(storage, [FreshnessSample("v", m, 30, 3.0, 9.0, 12.0, T + timedelta(seconds=1))], writer="b")
    record_samples(storage, [FreshnessSample("v", m, 10, 1.0, 2.0, 4.0, T)], writer="a")  # a retried write
    (s,) = read_samples(storage, "v", m, m + timedelta(minutes=1))
    assert (s.events, s.lag_p50, s.lag_p99, s.lag_max) == (40, 2.5, 9.0, 12.0)
    assert s.newest_event == T + timedelta(seconds=1)
    assert read_samples(storage, "v", m + timedelta(minutes=1), m + timedelta(hours=2)) == []
