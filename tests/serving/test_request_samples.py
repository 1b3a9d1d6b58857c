"""A real `kfloop serve` records the requests it answers, and ``kfloop slo status`` measures serving
availability and latency from them without Prometheus.

Reuses the session's trained workspace (tests/serving/conftest.py's ``trained``), copied so the samples other
servers of the session wrote there do not count, and the fault-injecting entry script of
test_error_statuses.py (the online-store read fails with a StorageError: 503 / UNAVAILABLE, server errors).
The server is stopped before the status is read: its last, partial minute is written at shutdown."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kfloop.config import load_config
from kfloop.layout import request_samples_prefix
from kfloop.serving.client import ServingClient, ServingRequestError
from kfloop.slo.status import slo_status
from kfloop.storage import LocalStorage
from tests.serving.conftest import Server, Trained
from tests.serving.test_error_statuses import ENTRY, MESSAGE

pytestmark = pytest.mark.slow


def _own_metrics(text: str, model: str) -> tuple[float, float]:
    """(timed requests, those within 0.5 s) of ``model`` on the server's /metrics."""
    count = fast = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            if s.name == "kfloop_request_seconds_count":
                count += s.value
            elif s.name == "kfloop_request_seconds_bucket" and s.labels["le"] == "0.5":
                fast += s.value
    return count, fast


def test_the_answered_requests_are_the_serving_slos(trained: Trained, tmp_path: Path) -> None:
    name = trained.config.training.model_name
    workspace = tmp_path / "ws"
    shutil.copytree(trained.loop.workspace, workspace)
    shutil.rmtree(workspace / request_samples_prefix(name), ignore_errors=True)  # earlier servers' requests
    config_path = trained.write_config(tmp_path / "kfloop.json", lambda d: d["storage"].update(root=str(workspace)))
    script, fault = tmp_path / "serve_with_fault.py", tmp_path / "fault"
    script.write_text(ENTRY)
    server = Server(config_path, entry=(str(script), str(fault)))
    rows = trained.request_rows(3)
    try:
        server.start()
        client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
        for protocol in ("v1", "v2", "grpc", "v2"):
            assert len(client.predict(rows, protocol)["predictions"]) == 3
        bad = httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": [{"amount": "lots"}]})
        assert bad.status_code == 400  # a client's mistake: good for availability
        fault.write_text(MESSAGE)
        for protocol in ("v1", "v2", "grpc"):
            with pytest.raises(ServingRequestError):
                client.predict(rows, protocol)
        client.close()
        timed, fast = _own_metrics(httpx.get(f"{server.url}/metrics").text, name)
    finally:
        assert server.stop() == 0, server.output()
    assert timed == 8

    keys = LocalStorage(workspace).list(request_samples_prefix(name))  # this process's hour (two across an hour)
    assert keys and all(f"-{server.proc.pid}-" in k for k in keys), keys

    config = load_config(config_path)
    got = {s.name: s for s in slo_status(config, LocalStorage(workspace), now=datetime.now(UTC))}
    served, latency = got["serving_availability"], got["serving_latency"]
    assert (served.good, served.total, served.source) == (5, 8, "workspace"), served.detail
    assert served.detail.startswith("8 requests, 3 server errors")
    assert (latency.good, latency.total, latency.source) == (fast, timed, "workspace"), latency.detail
