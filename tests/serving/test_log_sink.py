"""The KServe request-logger sink as a real HTTP server: events in, inference-log rows out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kfloop.config import Config, config_to_json
from kfloop.serving.inference_log import InferenceLog, read_inference_log
from kfloop.serving.log_sink import PROTOCOL, REQUEST_TYPE, RESPONSE_TYPE, create_app, main
from kfloop.storage import LocalStorage
from tests.conftest import free_port, wait_for_port
from tests.serving.test_inference_log import log_config

#: What KServe's logger sends besides the body (pkg/logger/worker.go: binary-mode CloudEvents).
KSERVE_HEADERS = {
    "ce-specversion": "1.0",
    "ce-source": "http://localhost:9081/",
    "ce-inferenceservicename": "fraud-detector",
    "ce-namespace": "kubeflow",
    "ce-component": "predictor",
    "ce-endpoint": "default",
    "content-type": "application/json",
}


def send(client: httpx.Client, event_id: str | None, ce_type: str, body: Any) -> httpx.Response:
    headers = {**KSERVE_HEADERS, "ce-type": ce_type}
    if event_id is not None:
        headers["ce-id"] = event_id
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/", content=content, headers=headers)


def v2_request(customers: list[str], amounts: list[float]) -> dict[str, Any]:
    n = len(customers)
    return {
        "id": "ignored",
        "inputs": [
            {"name": "customer_id", "datatype": "BYTES", "shape": [n], "data": customers},
            {"name": "amount", "datatype": "FP64", "shape": [n, 1], "data": [[a] for a in amounts]},
            {"name": "hour_of_day", "datatype": "INT64", "shape": [n], "data": list(range(n))},
            {"name": "amount_sum_24h", "datatype": "FP64", "shape": [n], "data": [10.0] * n},
            {"name": "not_logged", "datatype": "FP32", "shape": [n], "data": [0.0] * n},
        ],
    }


def v2_response(scores: list[float], version: str = "4") -> dict[str, Any]:
    n = len(scores)
    return {
        "model_name": "fraud-detector",
        "model_version": version,
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [n], "data": scores},
            {"name": "label", "datatype": "INT64", "shape": [n], "data": [int(s > 0.5) for s in scores]},
            {"name": "defaulted", "datatype": "BOOL", "shape": [n], "data": [False] * n},
        ],
    }


class ThreadServer:
    """The app under uvicorn in a thread: the real HTTP stack, stopped like a SIGTERM would (lifespan)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        wait_for_port(self.port, timeout=10)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return log_config(tmp_path / "ws", flush_seconds=3600)  # nothing is written before shutdown


@pytest.fixture(scope="module")
def shared_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One sink for the tests that only look at responses."""
    workspace = tmp_path_factory.mktemp("ws")
    config = log_config(workspace, flush_seconds=3600)
    with ThreadServer(create_app(config, InferenceLog(LocalStorage(workspace), config))) as client:
        yield client


def test_sigterm_drains_paired_v2_and_v1_events_into_the_log(tmp_path: Path, config: Config) -> None:
    port = free_port()
    env = {**os.environ, "KFLOOP_CONFIG_JSON": config_to_json(config)}
    cmd = [
        sys.executable,
        "-m",
        "kfloop.serving.log_sink",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            # V2, request first
            assert send(client, "a", REQUEST_TYPE, v2_request(["c1", "c2"], [5.0, 7.5])).json()["status"] == "pending"
            logged = send(client, "a", RESPONSE_TYPE, v2_response([0.9, 0.1]))
            assert logged.status_code == 200 and logged.json() == {"status": "logged", "id": "a", "rows": 2}
            # V1, response first (the logger's workers do not keep order)
            preds = {"predictions": [{"score": 0.3, "label": 0, "defaulted": True}]}
            assert send(client, "b", RESPONSE_TYPE, preds).json()["status"] == "pending"
            instances = {"instances": [{"customer_id": "c3", "merchant_id": "m9", "channel": "atm", "extra": 1}]}
            assert send(client, "b", REQUEST_TYPE, instances).json()["rows"] == 1
        assert LocalStorage(tmp_path / "ws").list("inference-log/") == []  # still buffered
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, so "killed by SIGTERM" is a clean exit here
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = {
        (r["request_id"], r["customer_id"]): r
        for r in read_inference_log(LocalStorage(tmp_path / "ws"), config).to_pylist()
    }
    assert set(rows) == {("a", "c1"), ("a", "c2"), ("b", "c3")}
    a1, a2, b = rows["a", "c1"], rows["a", "c2"], rows["b", "c3"]
    assert (a1["amount"], a1["hour_of_day"], a1["amount_sum_24h"], a1["label"]) == (5.0, 0, 10.0, 1)
    assert (a2["amount"], a2["hour_of_day"], a2["score"], a2["label"]) == (7.5, 1, pytest.approx(0.1), 0)
    assert a1["model_version"] == "4" and a1["defaulted"] is False
    assert (b["merchant_id"], b["channel"], b["score"], b["defaulted"], b["amount"]) == ("m9", "atm", 0.3, True, None)
    assert b["model_version"] is None  # V1 responses carry no version
    assert {r["protocol"] for r in rows.values()} == {PROTOCOL}


@pytest.mark.parametrize(
    ("event_id", "ce_type", "body", "message"),
    [
        (None, REQUEST_TYPE, {"instances": []}, "missing ce-id"),
        ("x", "org.kubeflow.serving.inference.other", {}, "unknown ce-type"),
        ("x", REQUEST_TYPE, b"{not json", "not valid JSON"),
        ("x", REQUEST_TYPE, {"rows": []}, "neither 'inputs' (V2) nor 'instances' (V1)"),
        ("x", REQUEST_TYPE, {"instances": [[1, 2]]}, "objects keyed by column name"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": "amount", "shape": [3], "data": [1, 2]}]}, "shape [3] but 2 values"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": "amount", "shape": [1, 2], "data": [1, 2]}]}, "one value per row"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": "other", "shape": [1], "data": [1]}]}, "no logged column"),
        ("x", RESPONSE_TYPE, {"outputs": [{"name": "label", "shape": [1], "data": [1]}]}, "no 'score' output"),
        ("x", RESPONSE_TYPE, {"predictions": ["yes"]}, "numbers (scores) or objects"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": ["amount"], "data": [1]}]}, "no logged column"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": "amount", "shape": "3", "data": [1]}]}, "invalid shape"),
        ("x", REQUEST_TYPE, {"inputs": [{"name": "amount"}]}, "has no 'data'"),
        ("x", REQUEST_TYPE, b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
    ],
)
def test_malformed_events_get_400_naming_the_problem(
    shared_sink: httpx.Client, event_id: str | None, ce_type: str, body: Any, message: str
) -> None:
    resp = send(shared_sink, event_id, ce_type, body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_row_count_mismatch_is_400_and_logs_nothing(tmp_path: Path, config: Config) -> None:
    storage = LocalStorage(tmp_path / "ws")
    with ThreadServer(create_app(config, InferenceLog(storage, config))) as client:
        assert send(client, "m", REQUEST_TYPE, v2_request(["c1", "c2"], [1.0, 2.0])).status_code == 200
        resp = send(client, "m", RESPONSE_TYPE, v2_response([0.5]))
        assert resp.status_code == 400 and "2 rows but the response 1" in resp.json()["error"]
        assert client.get("/healthz").json()["pending_events"] == 0
    assert read_inference_log(storage, config).num_rows == 0


def test_unpaired_events_are_bounded_by_count_and_age(tmp_path: Path, config: Config) -> None:
    storage = LocalStorage(tmp_path / "ws")
    app = create_app(config, InferenceLog(storage, config), max_pending=5, pending_ttl=3600)
    with ThreadServer(app) as client:
        before = _unpaired(client)
        for i in range(20):
            assert send(client, f"lonely-{i}", REQUEST_TYPE, v2_request(["c"], [1.0])).status_code == 200
        assert client.get("/healthz").json()["pending_events"] == 5
        assert _unpaired(client) - before == 15
        # the newest five are the ones kept: their responses still pair
        assert send(client, "lonely-19", RESPONSE_TYPE, v2_response([0.2])).json()["status"] == "logged"
        assert send(client, "lonely-0", RESPONSE_TYPE, v2_response([0.2])).json()["status"] == "pending"
    assert read_inference_log(storage, config).column("request_id").to_pylist() == ["lonely-19"]

    app = create_app(config, InferenceLog(storage, config), pending_ttl=0.0)
    with ThreadServer(app) as client:
        send(client, "old", REQUEST_TYPE, v2_request(["c"], [1.0]))
        send(client, "new", REQUEST_TYPE, v2_request(["c"], [1.0]))  # "old" has expired by now
        assert client.get("/healthz").json()["pending_events"] == 1


def test_structured_mode_events_are_accepted(tmp_path: Path, config: Config) -> None:
    storage = LocalStorage(tmp_path / "ws")
    with ThreadServer(create_app(config, InferenceLog(storage, config))) as client:
        for ce_type, data in ((REQUEST_TYPE, v2_request(["s1"], [3.0])), (RESPONSE_TYPE, v2_response([0.7]))):
            envelope = {"specversion": "1.0", "id": "s", "source": "test", "type": ce_type, "data": data}
            resp = client.post("/", json=envelope, headers={"content-type": "application/cloudevents+json"})
            assert resp.status_code == 200
    assert read_inference_log(storage, config).column("customer_id").to_pylist() == ["s1"]


def test_health_and_metrics(shared_sink: httpx.Client) -> None:
    health = shared_sink.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    text = shared_sink.get("/metrics").text
    assert "kfloop_inference_log_rows_total" in text and "kfloop_log_sink_unpaired_events_total" in text


def _unpaired(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('kfloop_log_sink_unpaired_events_total{model="fraud-detector"}'):
            return float(line.split()[-1])
    return 0.0


def test_shutdown_closes_the_log(tmp_path: Path, config: Config) -> None:
    log = InferenceLog(LocalStorage(tmp_path / "ws"), config)
    with ThreadServer(create_app(config, log)):
        assert any(t.name == "inference-log-fraud-detector" for t in threading.enumerate())
    assert log._thread is not None and not log._thread.is_alive()  # lifespan shutdown ran close()


def test_main_without_a_config_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KFLOOP_CONFIG_JSON", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "1"])
    assert exit_info.value.code == 1
    assert "--config PATH or set KFLOOP_CONFIG_JSON" in capsys.readouterr().err
