"""The Alertmanager entry point of retraining, over real HTTP: a firing drift alert starts one run, a
re-delivered payload (even to a restarted receiver) starts 0 runs, a malformed payload is answered 4xx with a
message, and a failed start is answered 503 and decided again on Alertmanager's retry."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kfloop.config import Config
from kfloop.monitoring.check import DRIFT
from kfloop.monitoring.retrain import FAILED, NO, RETRAIN, read_audit
from kfloop.monitoring.webhook import make_server, serve_in_thread
from kfloop.storage import LocalStorage, Storage
from tests.monitoring.test_retrain import T0, FakeLauncher, champion, check, retrain_config


def payload(check_id: str | None = None, status: str = "firing", fingerprint: str = "c0ffee01") -> dict:
    """An Alertmanager webhook payload (version 4) as Alertmanager sends it for the drift alert."""
    labels = {"alertname": "KfloopDrift", "model": "fraud-detector", "severity": "warning"}
    alert = {
        "status": status,
        "labels": labels | ({"check_id": check_id} if check_id else {}),
        "annotations": {"summary": "drift on fraud-detector"},
        "startsAt": "2026-03-01T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="KfloopDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "kfloop-retrain",
        "groupLabels": {"alertname": "KfloopDrift"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


@contextmanager
def receiver(config: Config, storage: Storage, launcher: FakeLauncher) -> Iterator[int]:
    server = make_server(config, storage, launcher, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def post(port: int, body: bytes | dict, path: str = "/alerts") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = resp.status, json.loads(resp.read())
    conn.close()
    return answer


@pytest.fixture
def drifting(tmp_path: Path) -> tuple[Config, LocalStorage, dict]:
    config = retrain_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    version = champion(storage, config, tmp_path)
    return config, storage, check(storage, config, version, DRIFT, T0)


def test_a_redelivered_alertmanager_payload_starts_no_run(drifting) -> None:
    config, storage, record = drifting
    launcher = FakeLauncher()
    with receiver(config, storage, launcher) as port:
        status, first = post(port, payload(record["check_id"]))
        assert status == 200 and [d["decision"] for d in first["decisions"]] == [RETRAIN]
        assert first["decisions"][0]["context"]["fingerprint"] == "c0ffee01"
        status, again = post(port, payload(record["check_id"]))  # Alertmanager's repeat or retry
    assert status == 200 and again["decisions"][0]["decision"] == NO
    assert "re-delivered" in again["decisions"][0]["reason"]
    with receiver(config, storage, launcher) as port:  # a restarted receiver remembers (the workspace does)
        _, restarted = post(port, payload(record["check_id"]))
    assert restarted["decisions"][0]["decision"] == NO and len(launcher.runs) == 1
    assert [a["decision"] for a in read_audit(storage)] == [RETRAIN, NO, NO]


def test_another_alert_of_the_same_episode_starts_nothing_either(drifting) -> None:
    config, storage, _ = drifting
    launcher = FakeLauncher()
    with receiver(config, storage, launcher) as port:
        post(port, payload())  # no check named: the newest check
        _, other = post(port, payload(fingerprint="beef0002"))  # a second alert (another rule) on the same drift
    assert "already started run" in other["decisions"][0]["reason"] and len(launcher.runs) == 1


def test_a_resolved_alert_or_an_unknown_check_starts_nothing(drifting) -> None:
    config, storage, _ = drifting
    launcher = FakeLauncher()
    with receiver(config, storage, launcher) as port:
        _, resolved = post(port, payload(status="resolved"))
        _, unknown = post(port, payload("../../registry/fraud-detector/stages", fingerprint="f2"))
    assert resolved["decisions"][0]["reason"] == "resolved alert: nothing to start"
    assert unknown["decisions"][0]["decision"] == NO and "no drift check" in unknown["decisions"][0]["reason"]
    assert launcher.runs == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({**payload(), "version": "3"}, "only Alertmanager webhook payload version 4"),
        ({k: v for k, v in payload().items() if k != "groupKey"}, "groupKey: missing"),
        ({**payload(), "alerts": {}}, "alerts: missing or not a list"),
        ({**payload(), "alerts": [{**payload()["alerts"][0], "status": "pending"}]}, "alerts[0].status"),
        ({**payload(), "alerts": [{"status": "firing", "labels": {}}]}, "alerts[0].fingerprint: missing"),
        ({**payload(), "alerts": [{**payload()["alerts"][0], "labels": []}]}, "alerts[0].labels: not an object"),
    ],
)
def test_a_malformed_payload_is_answered_400_with_the_reason(drifting, body: bytes | dict, message: str) -> None:
    config, storage, _ = drifting
    launcher = FakeLauncher()
    with receiver(config, storage, launcher) as port:
        status, answer = post(port, body)
    assert status == 400 and message in answer["error"] and launcher.runs == []


def test_wrong_paths_are_404(drifting) -> None:
    config, storage, _ = drifting
    with receiver(config, storage, FakeLauncher()) as port:
        assert post(port, payload(), path="/nowhere")[0] == 404


def test_a_run_that_could_not_start_is_503_and_the_retry_is_decided_again(drifting) -> None:
    config, storage, record = drifting
    down = FakeLauncher(fail=True)
    with receiver(config, storage, down) as port:
        status, answer = post(port, payload(record["check_id"]))
    assert status == 503 and "API is down" in answer["error"]
    launcher = FakeLauncher()
    with receiver(config, storage, launcher) as port:
        status, retried = post(port, payload(record["check_id"]))
    assert status == 200 and retried["decisions"][0]["decision"] == RETRAIN and len(launcher.runs) == 1
    assert [a["decision"] for a in read_audit(storage)] == [FAILED, RETRAIN]
