"""A served model's life: the champion changes under load (no request dropped, every response names the
version that scored it), a clean shutdown leaves every request in the inference log, and the online
store going away (a real redis-server stopped mid-test) is a 503 with readiness false, then recovery."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest

from benchmarks.redis_server import RedisServer
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, ServingRequestError
from kfloop.serving.inference_log import read_inference_log
from tests.feature_repo.harness import Loop, redis_backend
from tests.serving.conftest import Server, Trained, relaxed

pytestmark = pytest.mark.slow


def _register_copy(registry: ModelRegistry, source: ModelRegistry, version: str, **card: object) -> str:
    """A new version: ``version``'s files with card changes (e.g. another threshold)."""
    with tempfile.TemporaryDirectory() as tmp:
        source.fetch(version, Path(tmp))
        base = {k: v for k, v in source.get(version).card.items() if k not in ("files", "version", "registered")}
        return registry.register(Path(tmp), {**base, **card}).version


def _under_load(
    server: Server, name: str, rows: list[dict], action: Callable[[list], None], workers: int = 3
) -> list[tuple[str, int, str]]:
    """Run ``action`` while ``workers`` threads send V1 requests back to back; (request id, status, version)."""
    results: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not stop.is_set():
                rid = f"w{worker}-{i}"
                r = http.post(
                    f"{server.url}/v1/models/{name}:predict", json={"instances": rows}, headers={"x-request-id": rid}
                )
                results.append((rid, r.status_code, r.json().get("model_version", r.text)))
                i += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        action(results)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return results


def test_hot_switch_under_load_drops_nothing_and_the_log_has_every_request(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    cfg = trained.config
    name = cfg.training.model_name
    server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    registry = ModelRegistry(trained.loop.storage, name)
    start_version = registry.champion().version
    rows = trained.request_rows(5)
    new = ""

    def switch(results: list[tuple[str, int, str]]) -> None:
        nonlocal new
        new = _register_copy(registry, registry, start_version, threshold=0.0)  # every row labelled 1
        registry.promote(new, "hot switch test")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(v == new for _, _, v in results[-5:]):
            time.sleep(0.1)
        time.sleep(1.0)

    try:
        results = _under_load(server, name, rows, switch)
    finally:
        registry.promote(start_version, "restore the champion for other tests")

    statuses = {s for _, s, _ in results}
    assert statuses == {200}, [r for r in results if r[1] != 200][:3]
    versions = [v for _, _, v in results]
    assert start_version in versions and new in versions
    for worker in {rid.split("-")[0] for rid, _, _ in results}:  # each worker's requests are sequential
        seen = [v for rid, _, v in results if rid.split("-")[0] == worker]
        switched = seen.index(new) if new in seen else len(seen)
        assert set(seen[switched:]) <= {new}, "once a worker saw the new version, every later answer is from it"

    assert server.stop() is not None and not server.alive()
    log = read_inference_log(trained.loop.storage, cfg).to_pylist()
    by_request: dict[str, list[dict]] = {}
    for row in log:
        by_request.setdefault(row["request_id"], []).append(row)
    ours = {rid: version for rid, _, version in results}
    missing = [rid for rid in ours if len(by_request.get(rid, [])) != len(rows)]
    assert not missing, f"{len(missing)} of {len(ours)} requests not (fully) in the inference log: {missing[:5]}"
    for rid, version in ours.items():
        logged = by_request[rid]
        assert {r["model_version"] for r in logged} == {version}
        assert [r["customer_id"] for r in logged] == [r["customer_id"] for r in rows]
        assert all(r["score"] is not None and r["protocol"] == "v1" for r in logged)
        if version == new:
            assert all(r["label"] == 1 for r in logged)
    feature = cfg.features.feature_names()[0]
    assert any(r[feature] is not None for r in log), "stored features are logged too"


def _served_on_redis(
    trained: Trained, redis: RedisServer, start_server: Callable[..., Server], tmp_path: Path
) -> tuple[Loop, Server, ServingClient]:
    """The demo features materialized into ``redis``, the trained champion registered, a server on it."""
    backend = redis_backend(redis)
    loop = Loop.create(tmp_path / "ws", backend, relaxed)
    loop.load(trained.frame)
    loop.materialize()
    source = ModelRegistry(trained.loop.storage, trained.config.training.model_name)
    registry = ModelRegistry(loop.storage, loop.config.training.model_name)
    registry.promote(_register_copy(registry, source, trained.champion), "served on redis")
    config_path = tmp_path / "kfloop.json"
    config_path.write_text(json.dumps(loop.config.model_dump(mode="json")))
    server = start_server(config_path, env=backend.environ)
    return loop, server, ServingClient.for_config(loop.config, server.url, server.grpc_target)


def test_online_store_outage_is_a_503_with_readiness_false_then_recovers(
    trained: Trained, own_redis, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    loop, server, client = _served_on_redis(trained, own_redis, start_server, tmp_path)
    rows = trained.request_rows(3)
    assert not any(p["defaulted"] for p in client.predict(rows, "v2")["predictions"])
    # Redis answers a missing key with empty values (not "no row"): still an unknown entity
    stranger = [{**rows[0], "customer_id": "c-never-seen"}]
    assert client.predict(stranger, "v1")["predictions"][0]["defaulted"] is True

    own_redis.stop(save=True)
    with pytest.raises(ServingRequestError) as err:
        client.predict(rows, "v1")
    assert err.value.status == 503 and "online store unreachable" in err.value.message
    with pytest.raises(ServingRequestError) as err:
        client.predict(rows, "grpc")
    assert err.value.status == grpc.StatusCode.UNAVAILABLE.name
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 503
    model_ready = httpx.get(f"{server.url}/v2/models/{loop.config.training.model_name}/ready")
    assert model_ready.status_code == 503 and "online store" in model_ready.json()["error"]
    assert server.alive()

    own_redis.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and httpx.get(f"{server.url}/v2/health/ready").status_code != 200:
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    preds = client.predict(rows, "v1")["predictions"]
    assert not any(p["defaulted"] for p in preds), "the restarted store still has the features"


def test_a_hung_online_store_is_a_503_in_bounded_time_and_the_server_stays_responsive(
    trained: Trained, own_redis, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """redis-server stopped with SIGSTOP: connections hang instead of being refused."""
    loop, server, client = _served_on_redis(trained, own_redis, start_server, tmp_path)
    rows = trained.request_rows(2)
    client.predict(rows, "v1")

    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ServingRequestError) as err:
            client.predict(rows, "v1")
        assert err.value.status == 503 and "online store unreachable" in err.value.message
        assert time.monotonic() - started < 10 * loop.config.serving.lookup_timeout_seconds
        live = httpx.get(f"{server.url}/v2/health/live", timeout=5)  # the event loop is not blocked
        assert live.status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and httpx.get(f"{server.url}/v2/health/ready").status_code != 200:
        time.sleep(0.2)
    assert client.predict(rows, "grpc")["predictions"][0]["defaulted"] is False
