"""A project error on a request path is answered by kfloop.errors' mapping over REST (V1, V2) and gRPC, in
the usual body, and the server keeps serving: storage trouble is a 503 / UNAVAILABLE, not a 500.

No request path of the server touches the workspace storage (the model is fetched and loaded before it
serves, the inference log is written off the request path, the feature lookup reads Feast's online store).
So the fault is injected at the online-store boundary, ``ServingLookup.read_batch`` (the part of the lookup
that reads the store): the real `kfloop serve` runs through a small entry script that makes it raise a
``StorageError`` (chained from a connection reset) while a flag file exists. The rest is the real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kfloop.serving.client import ServingClient, ServingRequestError
from tests.serving.conftest import Server, Trained

pytestmark = pytest.mark.slow

ENTRY = """
import sys
from pathlib import Path

from kfloop.cli import main
from kfloop.errors import StorageError
from kfloop.feature_repo.online import ServingLookup

FAULT = Path(sys.argv.pop(1))  # while this file exists, reading the online store fails with its text
read_batch = ServingLookup.read_batch


def failing(self, protos):
    if FAULT.exists():
        raise StorageError(FAULT.read_text()) from ConnectionResetError(104, "Connection reset by peer")
    return read_batch(self, protos)


ServingLookup.read_batch = failing
main()
"""
MESSAGE = "s3://bucket/online: storage unreachable (injected)"


def test_storage_trouble_on_a_request_is_a_503_over_rest_and_unavailable_over_grpc(
    trained: Trained, tmp_path: Path
) -> None:
    script, fault = tmp_path / "serve_with_fault.py", tmp_path / "fault"
    script.write_text(ENTRY)
    server = Server(trained.write_config(tmp_path / "kfloop.json"), entry=(str(script), str(fault)))
    name = trained.config.training.model_name
    rows = trained.request_rows(2)
    try:
        server.start()
        client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
        assert len(client.predict(rows, "v1")["predictions"]) == 2

        fault.write_text(MESSAGE)
        for protocol in ("v1", "v2"):
            with pytest.raises(ServingRequestError) as err:
                client.predict(rows, protocol)
            assert (err.value.status, err.value.message) == (503, MESSAGE), protocol
        with pytest.raises(ServingRequestError) as err:
            client.predict(rows, "grpc")
        assert (err.value.status, err.value.message) == ("UNAVAILABLE", MESSAGE)
        raw = httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": rows})
        assert (raw.status_code, raw.json()) == (503, {"error": MESSAGE})
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'kfloop_requests_total{{model="{name}",protocol="grpc",status="UNAVAILABLE"}} 1.0' in metrics
        assert f'kfloop_requests_total{{model="{name}",protocol="v1",status="503"}} 2.0' in metrics
        # the server's own warm-up requests (one per protocol, before readiness) are not counted as clients'
        assert f'kfloop_requests_total{{model="{name}",protocol="v1",status="200"}} 1.0' in metrics
        assert 'protocol="grpc",status="OK"' not in metrics
        assert "warm-up: v1 ok, v2 ok, grpc ok" in server.log_path.read_text()

        fault.unlink()
        assert server.alive()
        for protocol in ("v1", "v2", "grpc"):
            assert len(client.predict(rows, protocol)["predictions"]) == 2, protocol
        client.close()
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace") if server.log_path else ""
    # one line per failed request, naming the chained cause, without a traceback
    assert f"503 StorageError: {MESSAGE} (cause: ConnectionResetError: [Errno 104] Connection reset by peer)" in log
