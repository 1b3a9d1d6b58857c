"""The serving indicators from the workspace: the request sampler's deltas, minute and hour boundaries and
retries on real prometheus_client metrics (a registry of their own, defined as serving's are: same names,
labels and buckets), the writers added up on read, and availability and latency from fixture samples
(kfloop.serving.request_samples, kfloop.slo.serving). The real server records them in
tests/serving/test_request_samples.py."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from kfloop.config.slo import SERVING_LATENCY_BUCKETS
from kfloop.errors import StorageError
from kfloop.layout import request_samples_key, request_samples_prefix
from kfloop.monitoring import metric_names as names
from kfloop.serving.request_samples import (
    RequestSample,
    RequestSampler,
    is_server_error,
    read_request_samples,
)
from kfloop.slo.serving import serving_counts
from kfloop.slo.status import slo_status
from kfloop.storage import LocalStorage
from tests.slo.conftest import NOW, slo_config

MODEL = "fraud-detector"
M = timedelta(minutes=1)
T0 = NOW - timedelta(hours=1) + 30 * timedelta(seconds=1)  # 23:00:30, the sampler starts mid-minute


class Metrics:
    """kfloop.serving.metrics' REQUESTS and LATENCY, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(names.REQUESTS, "requests", ["model", "protocol", "status"], registry=self.registry)
        self.latency = Histogram(
            names.REQUEST_SECONDS, "latency", ["model", "protocol"], buckets=SERVING_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip

    def answer(self, status: str, seconds: float, *, protocol: str = "v2", model: str = MODEL, n: int = 1) -> None:
        """``n`` requests answered as the RestGuard / observe_grpc count them."""
        for _ in range(n):
            self.requests.labels(model, protocol, status).inc()
            self.latency.labels(model, protocol).observe(seconds)


def _stored(storage: LocalStorage) -> list[RequestSample]:
    return read_request_samples(storage, MODEL, NOW - timedelta(days=1), NOW + timedelta(days=1))


def test_the_error_statuses_are_the_alert_rules_ones() -> None:
    assert [s for s in ("200", "400", "404", "413", "500", "503", "OK", "INVALID_ARGUMENT") if is_server_error(s)] == [
        "500",
        "503",
    ]
    assert all(is_server_error(s) for s in ("INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS", "DEADLINE_EXCEEDED"))
    assert not is_server_error("5030") and not is_server_error("NOT_FOUND")  # anchored, as PromQL's =~


def test_deltas_go_to_the_minute_they_were_counted_in(tmp_path: Path) -> None:
    storage, metrics = LocalStorage(tmp_path / "ws"), Metrics()
    metrics.answer("200", 0.01, n=4)  # before the sampler: another run's, not reported
    sampler = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="a", clock=lambda: T0)

    metrics.answer("200", 0.004, n=3)
    metrics.answer("404", 0.001, protocol="v1")  # a client's mistake: good for availability
    metrics.answer("503", 0.7)
    metrics.answer("UNAVAILABLE", 3.0, protocol="grpc")
    metrics.answer("200", 0.01, model=f"{MODEL}-predictor", n=5)  # kfloop serve's predictor endpoint: left out
    sampler.tick(NOW - 59 * M + timedelta(seconds=0.05))  # the first tick after 23:01 closes minute 23:00
    metrics.answer("200", 0.3, n=2)
    sampler.tick(NOW - 58 * M + timedelta(seconds=0.05))
    key = request_samples_key(MODEL, "2026-02-28T23", "a")
    written = storage.modified(key)
    sampler.tick(NOW - 57 * M + timedelta(seconds=0.05))  # nothing answered: no sample, no write
    assert storage.modified(key) == written
    [first, second] = _stored(storage)

    assert (first.minute, first.requests, first.errors) == (NOW - 60 * M, 6, 2)
    assert (first.buckets["0.005"], first.buckets["0.5"], first.buckets["2.5"], first.buckets["+Inf"]) == (4, 4, 5, 6)
    assert first.within(0.5) == (4, True) and first.within(0.005) == (4, True) and first.within(0.0005) == (0, True)
    assert (second.minute, second.requests, second.errors, second.buckets["0.25"], second.buckets["0.5"]) == (
        NOW - 59 * M,
        2,
        0,
        0,
        2,
    )
    assert storage.list(request_samples_prefix(MODEL)) == [key]


def test_an_hour_per_object_and_the_last_minute_at_close(tmp_path: Path) -> None:
    storage, metrics = LocalStorage(tmp_path / "ws"), Metrics()
    now = [NOW - 2 * M]
    sampler = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="a", clock=lambda: now[0])
    metrics.answer("200", 0.01)
    sampler.tick(NOW - M)  # 23:58 → 23:59
    metrics.answer("500", 0.01)
    sampler.tick(NOW + timedelta(seconds=0.05))  # minute 23:59, still the old hour's
    metrics.answer("200", 0.01, n=2)
    now[0] = NOW + timedelta(seconds=20)
    sampler.close()  # the partial minute 00:00, in the new hour's object
    sampler.close()  # once: a second close (the server's two stop hooks) counts nothing twice
    hours = [k.rsplit("/", 2)[1] for k in storage.list(request_samples_prefix(MODEL))]
    assert hours == ["2026-02-28T23", "2026-03-01T00"]
    assert [(s.minute, s.requests, s.errors) for s in _stored(storage)] == [
        (NOW - 2 * M, 1, 0),
        (NOW - M, 1, 1),
        (NOW, 2, 0),
    ]


def test_the_background_loop_ticks_when_a_minute_starts(tmp_path: Path) -> None:
    """``run`` on a clock 0.1 s before 23:01: it sleeps into the new minute and records 23:00's requests."""
    storage, metrics = LocalStorage(tmp_path / "ws"), Metrics()
    clock = [NOW - 59 * M - timedelta(seconds=0.1)]
    sampler = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="a", clock=lambda: clock[0])
    metrics.answer("503", 0.01, n=2)

    async def one_minute() -> None:
        task = asyncio.create_task(sampler.run())
        await asyncio.sleep(0.05)
        assert _stored(storage) == []  # not before the minute ends
        clock[0] = NOW - 59 * M + timedelta(seconds=0.05)
        for _ in range(100):  # it ticks 0.15 s after starting, in a worker thread
            await asyncio.sleep(0.02)
            if _stored(storage):
                break
        task.cancel()

    asyncio.run(one_minute())
    assert [(s.minute, s.requests, s.errors) for s in _stored(storage)] == [(NOW - 60 * M, 2, 2)]


def test_a_failed_write_keeps_the_counts_for_the_next_minute(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage, metrics = LocalStorage(tmp_path / "ws"), Metrics()
    sampler = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="a", clock=lambda: T0)
    blocker = tmp_path / "ws" / request_samples_prefix(MODEL) / "2026-02-28T23"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the hour's directory goes: every write under it fails")
    metrics.answer("500", 0.01, n=3)
    sampler.tick(NOW - 59 * M)
    assert "cannot write the request samples of fraud-detector 2026-02-28T23 (retried next minute)" in caplog.text
    blocker.unlink()
    metrics.answer("200", 0.01)
    sampler.tick(NOW - 58 * M)
    assert [(s.minute, s.requests, s.errors) for s in _stored(storage)] == [(NOW - 60 * M, 3, 3), (NOW - 59 * M, 1, 0)]


def test_writers_add_up_and_a_rewrite_replaces_the_writers_own_object(tmp_path: Path) -> None:
    storage, metrics = LocalStorage(tmp_path / "ws"), Metrics()
    a = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="a", clock=lambda: T0)
    b = RequestSampler(storage, [MODEL], registry=metrics.registry, writer="b", clock=lambda: T0)
    metrics.answer("200", 0.01, n=2)
    metrics.answer("503", 1.0)
    a.tick(NOW - 59 * M)
    metrics.answer("200", 0.01)
    a.tick(NOW - 58 * M)  # rewrites a's hour with both minutes: 23:00 is not counted twice
    b.tick(NOW - 59 * M)  # b saw all four in its minute 23:00
    [first, second] = _stored(storage)
    assert (first.requests, first.errors, first.buckets["0.5"], first.buckets["+Inf"]) == (3 + 4, 1 + 1, 2 + 3, 7)
    assert (second.minute, second.requests, second.errors) == (NOW - 59 * M, 1, 0)
    assert len(storage.list(request_samples_prefix(MODEL))) == 2


# --- the indicators from samples --------------------------------------------------------------------
def _sample(minutes_ago: int, requests: int, errors: int, within: int, bound: str = "0.5") -> RequestSample:
    return RequestSample(MODEL, NOW - minutes_ago * M, requests, errors, {"0.25": 0, bound: within, "+Inf": requests})


def _record(storage: LocalStorage, writer: str, samples: list[RequestSample]) -> None:
    for hour in sorted({s.minute.strftime("%Y-%m-%dT%H") for s in samples}):
        body = [s.to_json() for s in samples if s.minute.strftime("%Y-%m-%dT%H") == hour]
        storage.write_text(request_samples_key(MODEL, hour, writer), json.dumps(body))


def test_availability_and_latency_over_the_window(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws", window="7d")
    week = 7 * 24 * 60
    _record(storage, "a", [_sample(week + 1, 50, 50, 0), _sample(week, 1000, 3, 995), _sample(90, 1000, 2, 990)])
    _record(storage, "b", [_sample(90, 1000, 0, 1000), _sample(0, 7, 7, 0)])  # 00:00: the minute after the window
    got = {s.name: s for s in slo_status(config, storage, now=NOW)}
    served, latency = got["serving_availability"], got["serving_latency"]
    assert (served.good, served.total, served.source) == (2995, 3000, "workspace")
    assert served.budget_remaining == pytest.approx(1 - 5 / (3000 * 0.005))
    assert served.detail.startswith("3,000 requests, 5 server errors (status 5..|INTERNAL|")
    assert "[monitoring/fraud-detector/requests/]" in served.detail
    assert (latency.good, latency.total, latency.source) == (2985, 3000, "workspace")
    assert latency.budget_remaining == pytest.approx(1 - 15 / 30)
    assert latency.detail.startswith("3,000 requests, 15 slower than 0.5s, from the serving processes'")

    stricter = slo_config(tmp_path / "ws", window="7d", serving_latency={"objective": 0.99, "threshold_seconds": 0.25})
    assert serving_counts(stricter, storage, NOW - timedelta(days=7), NOW)["serving_latency"].good == 0


def test_a_sample_without_the_threshold_bucket_is_judged_at_a_lower_bound(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws", window="7d")  # threshold 0.5 s
    old = RequestSample(MODEL, NOW - 10 * M, 10, 0, {"0.25": 6, "0.75": 10, "+Inf": 10})
    _record(storage, "a", [old, _sample(5, 10, 0, 9)])
    latency = serving_counts(config, storage, NOW - timedelta(days=7), NOW)["serving_latency"]
    assert (latency.good, latency.total) == (6 + 9, 20)
    assert "(10 recorded without a 0.5s bucket, judged at a lower bound)" in latency.detail


def test_no_sample_is_no_data_and_a_corrupt_one_names_its_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws", window="7d")
    got = {s.name: s for s in slo_status(config, storage, now=NOW)}
    for name in ("serving_availability", "serving_latency"):
        assert got[name].sli is None and got[name].budget_remaining is None
        assert "no request of model 'fraud-detector' recorded in the window" in got[name].detail
    key = request_samples_key(MODEL, "2026-02-28T22", "a")
    storage.write_text(key, '[{"model": "fraud-detector"}]')
    with pytest.raises(StorageError, match=r"2026-02-28T22/a.json: not a list of request samples \(KeyError"):
        slo_status(config, storage, now=NOW)
