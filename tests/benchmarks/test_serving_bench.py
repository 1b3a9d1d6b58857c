"""The serving benchmark's load generator against a real uvicorn process (the benchmark's HTTP floor), plus
the pure pieces: the max-rate search on a fake generator and the Prometheus histogram quantile bound.

No MLServer venv and no demo workspace here: the whole benchmark is run by hand (``python -m benchmarks
serving``); this keeps its tool honest in a few seconds.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a plain folder at the repo root (see test_harness.py)

from benchmarks.redis_server import free_port  # noqa: E402
from benchmarks.serving_load import HttpTarget, LoadGenerator, LoadResult, LoadSpec, http_request  # noqa: E402
from benchmarks.serving_report import quantile_bound  # noqa: E402
from benchmarks.serving_search import SearchPolicy, find_max_rate  # noqa: E402
from benchmarks.serving_targets import ServerProcess, floor  # noqa: E402


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = floor(free_port(), tmp_path_factory.mktemp("floor") / "uvicorn.log")
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()
    assert not server.alive()


def _target(server: ServerProcess, bodies: int = 3) -> HttpTarget:
    port = int(server.ready_url.rsplit(":", 1)[1].strip("/"))
    requests = tuple(
        http_request("127.0.0.1", port, "POST", "/v1/models/m:predict", b'{"instances": [%d]}' % i, "application/json")
        for i in range(bodies)
    )
    return HttpTarget("127.0.0.1", port, requests)


def test_open_loop_run_against_uvicorn(hello: ServerProcess) -> None:
    with LoadGenerator() as gen:
        result = gen.run(LoadSpec(_target(hello), rate=400, count=600))
    assert result.errors == 0, result.first_error
    assert result.ok == result.count == 600 and len(result.lags) == 600
    assert 0 < result.p(50) <= result.p(99) <= max(result.latencies)
    assert result.achieved_rps > 0
    # open loop: 600 requests at 400/s take about 1.5 s whatever the server does
    assert 1.4 <= result.elapsed < 5
    assert 1 <= result.connections <= 128
    assert hello.cpu_seconds() is not None and (hello.rss() or 0) > 0


def test_errors_are_counted_not_raised(hello: ServerProcess) -> None:
    target = _target(hello)
    closed = HttpTarget("127.0.0.1", free_port(), target.requests)  # nothing listens there
    with LoadGenerator() as gen:
        result = gen.run(LoadSpec(closed, rate=100, count=20, initial_connections=0, timeout=2))
    assert result.ok == 0 and result.errors == 20 and result.first_error
    assert result.p(99) == float("inf")


class _FakeGenerator:
    """p99 grows with the rate: 1 ms below 1,000/s, 50 ms from there."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def run(self, spec: LoadSpec) -> LoadResult:
        self.rates.append(spec.rate)
        latency = 0.001 if spec.rate < 1000 else 0.050
        return LoadResult(spec.rate, spec.count, [latency] * spec.count, [0.0] * spec.count, elapsed=1.0)


def test_search_doubles_then_bisects_with_retries() -> None:
    fake = _FakeGenerator()
    policy = SearchPolicy(start_rate=100, step_seconds=0.01, min_requests=1, pause=0)
    search = find_max_rate(fake, HttpTarget("127.0.0.1", 1, (b"",)), policy)  # type: ignore[arg-type]
    # 100 200 400 800 pass, 1600 fails twice, then 1200 ✗✗ 1000 ✗✗ 900 ✓
    assert fake.rates == [100, 200, 400, 800, 1600, 1600, 1200, 1200, 1000, 1000, 900]
    assert search.max_rate == 900
    best = search.at_max()
    assert best is not None and best.passed and best.p99 == pytest.approx(0.001)
    assert next(s.why for s in search.steps if not s.passed) == "p99 50.0 ms"


def test_quantile_bound_is_the_bucket_holding_the_quantile() -> None:
    buckets = [(float("inf"), 100.0), (0.001, 50.0), (0.002, 90.0), (0.005, 100.0)]  # any order
    assert quantile_bound(buckets, 0.5) == 0.001
    assert quantile_bound(buckets, 0.7) == 0.002
    assert quantile_bound(buckets, 0.99) == 0.005
    assert quantile_bound([(0.001, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_closed_loop_keeps_n_requests_in_flight(hello: ServerProcess) -> None:
    from benchmarks.serving_closed import ClosedSpec

    with LoadGenerator() as gen:
        one = gen.run(ClosedSpec(_target(hello), connections=1, count=300))
        four = gen.run(ClosedSpec(_target(hello), connections=4, count=400))
    for result, connections in ((one, 1), (four, 4)):
        assert result.errors == 0, result.first_error
        assert result.ok == result.count and result.connections == connections
        assert 0 < result.p(50) <= result.p(99) and result.achieved_rps > 0


def test_log_comparison_pairs_each_case_with_the_server_without_the_log(tmp_path: Path) -> None:
    import yaml

    from benchmarks.serving_log import config_without_log, log_cases

    config = tmp_path / "kfloop.yaml"
    config.write_text(yaml.safe_dump({"project": "p", "serving": {"http_port": 1}}))
    off = yaml.safe_load(config_without_log(config).read_text())
    assert off == {"project": "p", "serving": {"http_port": 1, "inference_log": {"enabled": False}}}
    cases = log_cases(1001, 1002, "m", [{"amount": 1.0}])
    assert [c.label for c in cases[:4]] == ["V1 c=1 log on", "V1 c=1 log off", "V1 c=4 log on", "V1 c=4 log off"]
    assert [(c.target.port, c.log) for c in cases[:2]] == [(1001, True), (1002, False)]  # type: ignore[union-attr]
    assert len(cases) == 8 and {c.protocol for c in cases} == {"V1", "V2"}


PAIR_APP = """
import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    request = json.loads(body)
    if scope["path"] == "/get-online-features":  # Feast's answer: the keys, then the features
        key = request["entities"]["customer_id"][0]
        answer = {"results": [{"values": [key]}, {"values": [float(key[2:])]}]}
        status = 200
    else:  # the model: 200 only for the looked-up feature beside the request's own input
        inputs = {i["name"]: i for i in request["inputs"]}
        ok = inputs["spend"]["datatype"] == "FP64" and inputs["spend"]["data"] == [inputs["amount"]["data"][0] * 10]
        answer, status = {"outputs": []}, 200 if ok else 400
    data = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
"""


def test_a_pair_request_is_a_lookup_then_a_model_call_built_from_its_answer(tmp_path: Path) -> None:
    from benchmarks.serving_payloads import feast_lookup_body, pair_target

    (tmp_path / "pair_app.py").write_text(PAIR_APP)
    port = free_port()
    rows = [{"amount": float(i)} for i in range(1, 4)]
    lookups = [feast_lookup_body("svc", {"customer_id": f"c-{10 * i}"}) for i in range(1, 4)]
    good = pair_target(port, port, "m", lookups, [(1, "spend", "FP64")], rows)
    wrong = pair_target(port, port, "m", lookups, [(0, "spend", "FP64")], rows)  # the key, not the feature
    with _uvicorn(tmp_path, "pair_app:app", port), LoadGenerator() as gen:
        ok = gen.run(LoadSpec(good, rate=200, count=60))
        refused = gen.run(LoadSpec(wrong, rate=200, count=6))
    assert ok.errors == 0 and ok.ok == 60, ok.first_error
    assert refused.errors == 6 and "HTTP 400 from the model server" in (refused.first_error or "")


@contextmanager
def _uvicorn(app_dir: Path, app: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A uvicorn process serving ``app``, once its port accepts connections (the app has no GET route)."""
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), app, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_config_with_workers_is_written_beside_the_original(tmp_path: Path) -> None:
    import yaml

    from benchmarks.serving_targets import config_with_workers

    config = tmp_path / "kfloop.yaml"
    config.write_text(yaml.safe_dump({"project": "p", "serving": {"http_port": 1}}))
    assert yaml.safe_load(config_with_workers(config, 2).read_text()) == {
        "project": "p",
        "serving": {"http_port": 1, "workers": 2},
    }
