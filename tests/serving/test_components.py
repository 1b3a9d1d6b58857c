"""The cluster layout on one machine: `python -m kfloop.serving predictor` and `... transformer` as separate
processes (as the InferenceService runs them), the transformer calling the predictor over V2 REST or gRPC
with KServe's client; same scores as the one-process server; a dead predictor is a 503, not a 500."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kfloop.config import config_to_json
from kfloop.layout import CARD_FILE
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, ServingRequestError
from tests.conftest import free_port
from tests.serving.conftest import ROOT, Server, Trained, wait_ready

pytestmark = pytest.mark.slow


class Component:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "kfloop.serving", *args]
        cmd += ["--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port)]
        self.log = log
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 90) -> Component:
        wait_ready(f"http://127.0.0.1:{self.http_port}", self.proc, self.log, timeout)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def components(trained: Trained, tmp_path: Path) -> Iterator[tuple[Component, Component, Component]]:
    """A predictor on the champion's files (as the storage initializer leaves them in /mnt/models) and two
    transformers in front of it: one calling it over V2 REST, one over gRPC."""
    registry = ModelRegistry(trained.loop.storage, trained.config.training.model_name)
    model_dir = registry.fetch(trained.champion, tmp_path / "mnt-models")
    (model_dir / CARD_FILE).write_text(json.dumps(registry.get(trained.champion).card, default=str))
    env = {"KFLOOP_CONFIG_JSON": config_to_json(trained.config)}
    predictor = Component(["predictor", "--model_dir", str(model_dir)], env, tmp_path / "predictor.log")
    started = [predictor]
    try:
        predictor.wait_ready()
        for protocol, port in (("v2", predictor.http_port), ("grpc-v2", predictor.grpc_port)):
            args = ["transformer", "--model_name", trained.config.training.model_name]
            args += ["--predictor_host", f"127.0.0.1:{port}", "--predictor_protocol", protocol]
            started.append(Component(args, env, tmp_path / f"transformer-{protocol}.log"))
        for c in started[1:]:
            c.wait_ready()
        yield started[0], started[1], started[2]
    finally:
        for c in started:
            c.stop()


def test_separate_components_score_like_the_one_process_server(
    trained: Trained, components: tuple[Component, Component, Component], start_server, tmp_path: Path
) -> None:
    predictor, via_rest, via_grpc = components
    local: Server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    rows = trained.request_rows(25)
    rows[3]["customer_id"] = "c-not-in-store"
    expected = ServingClient.for_config(trained.config, local.url, local.grpc_target).predict(rows, "v2")
    for transformer in (via_rest, via_grpc):
        client = ServingClient.for_config(
            trained.config, f"http://127.0.0.1:{transformer.http_port}", f"127.0.0.1:{transformer.grpc_port}"
        )
        for protocol in ("v1", "v2", "grpc"):
            got = client.predict(rows, protocol)
            assert got["model_version"] == trained.champion, (transformer.log.name, protocol)
            np.testing.assert_allclose(
                [p["score"] for p in got["predictions"]], [p["score"] for p in expected["predictions"]], rtol=1e-6
            )
            assert [p["defaulted"] for p in got["predictions"]] == [i == 3 for i in range(25)]
    # unlike a local `kfloop serve`, the pod's components listen on every interface (127.0.0.2 reaches them)
    for component in (predictor, via_rest, via_grpc):
        for port in (component.http_port, component.grpc_port):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()

    predictor.stop()
    for transformer in (via_rest, via_grpc):
        client = ServingClient.for_config(trained.config, f"http://127.0.0.1:{transformer.http_port}")
        with pytest.raises(ServingRequestError) as err:
            client.predict(rows, "v1")
        assert err.value.status == 503 and "predictor" in err.value.message
        assert transformer.proc.poll() is None
