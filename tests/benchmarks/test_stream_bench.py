"""The stream benchmark at a tiny size on a real redis-server and the SQLite online store: each path (ours, the
peer, the floor) consumes a 1 s stream at 200 events/s end to end (producer and consumer processes, the probe),
every event is written, the probe's final counts match what was sent; and the peer's and the floor's
features equal the batch engine's on the same events.

The full run (2,000/s for 60 s on both stores, and the max-rate searches) is by hand: ``make bench NAME=stream``.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a plain folder at the repo root (see test_harness.py)

from benchmarks.stream import RunResult, Search, SearchPolicy, find_max_rate, run_once  # noqa: E402
from benchmarks.stream_load import PoolSpec, event_pool  # noqa: E402
from benchmarks.stream_paths import pandas_features, precomputed_values  # noqa: E402
from kfloop.aggregates import compute_view  # noqa: E402
from kfloop.components.materialize import latest_per_entity  # noqa: E402
from kfloop.config import parse_config  # noqa: E402
from kfloop.config.contract import parse_duration  # noqa: E402
from tests.feature_repo.conftest import redis_server  # noqa: E402, F401  (fixture)

RATE, SECONDS = 200.0, 1.0


@pytest.mark.parametrize("path", ["ours", "peer", "floor"])
def test_each_path_consumes_a_tiny_stream(redis_server, path: str) -> None:  # noqa: F811
    # fork: the test process has imported everything already (the benchmark's fork server takes ~7 s to start)
    result = run_once(redis_server, "sqlite", path, RATE, SECONDS, drain_timeout=20, context=mp.get_context("fork"))
    assert result.sent == RATE * SECONDS and result.producer_behind < 0.5
    assert result.drain is not None, "every event written online"
    assert not result.probe_wrong, result.probe_wrong  # the sampled entities' final counts equal the events sent
    for name, lags in result.views.items():
        assert lags.written == result.sent, name
        assert 0 <= lags.p50 <= lags.p99 <= lags.max < 20, name
    assert sum(p["samples"] for p in result.probe.values()) > 0, "the probe saw updates"
    assert result.passed and result.achieved > 0
    if path == "ours":  # the worker's own measurements came back too
        buckets = result.extra["histogram"]
        assert {v: max(c for _, c in b) for v, b in buckets.items()} == dict.fromkeys(result.views, result.sent)
        assert result.extra["stats"]["records"] == result.sent
        assert any(result.extra["freshness_samples"].values()), "the worker stored its minute samples"


def _live(pool, start: datetime) -> pa.Table:
    """The pool as if sent live: 50 ms apart from ``start`` (all inside the shortest window)."""
    frame = pool.copy()
    frame["event_timestamp"] = [start + timedelta(milliseconds=50 * i) for i in range(len(frame))]
    return frame


def test_peer_and_floor_features_equal_the_batch_engine(tmp_path: Path) -> None:
    from benchmarks.stream import bench_config

    config = parse_config(bench_config("sqlite", tmp_path), "test")
    pool = event_pool(PoolSpec(events=400))
    frame = _live(pool, datetime(2026, 6, 1, tzinfo=UTC))
    label_delay = parse_duration(config.features.label_delay)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for view in config.features.views:
        engine = latest_per_entity(
            compute_view(table, view, "event_timestamp", label_delay), view.entity
        ).to_pandas().set_index(view.entity)  # fmt: skip
        peer = pandas_features(frame, view, "event_timestamp", label_delay).set_index(view.entity)
        floor = precomputed_values(frame, view)
        last = frame.reset_index(drop=True).groupby(view.entity).tail(1)  # each entity's newest event
        for name in view.feature_names():
            want = engine[name].reindex(peer.index).to_numpy(dtype=float)
            np.testing.assert_allclose(peer[name].to_numpy(dtype=float), want, rtol=1e-9, err_msg=name)
            if name != "seconds_since_previous":  # depends on send times: the floor leaves it null
                got = np.asarray(floor[name][last.index], dtype=float)
                expected = engine[name].reindex(last[view.entity]).to_numpy(dtype=float)
                np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=name)


def _step(rate: float, ok_below: float, behind: float = 0.0) -> RunResult:
    from benchmarks.stream import ViewLags

    p99 = 0.5 if rate < ok_below else 9.0
    lags = ViewLags(0.1, p99, p99, 0.0, 10, [p99])
    return RunResult("sqlite", "ours", rate, 1, 10, rate, behind, rate, 0, 0.1, {"v": lags}, {}, [], None, None, 0)


def test_search_doubles_then_bisects_and_stops_at_the_producer() -> None:
    rates: list[float] = []

    def run(rate: float) -> RunResult:
        rates.append(rate)
        return _step(rate, ok_below=3000)

    search: Search = find_max_rate(run, SearchPolicy(start=1000, refine=2))
    assert rates == [1000, 2000, 4000, 3000, 2500] and search.max_rate == 2500 and not search.bounded_by_producer

    bound = find_max_rate(lambda r: _step(r, ok_below=1e9, behind=2.0 if r >= 4000 else 0), SearchPolicy(start=1000))
    assert bound.max_rate == 2000 and bound.bounded_by_producer
