"""`kfloop serve` with serving.workers: 2, a real supervisor and two real worker processes on one pair of ports:
requests land on both workers, /metrics counts each request once (warm-ups none), a promotion switches every
worker, and after a clean stop the inference log holds every row once and the request samples every request."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from kfloop.config import Config, load_config
from kfloop.layout import request_samples_prefix
from kfloop.registry import ModelRegistry
from kfloop.serving.client import grpc_request, v2_inputs
from kfloop.serving.inference_log import log_prefix, read_inference_log
from kfloop.serving.protocol import request_specs
from kfloop.serving.request_samples import read_request_samples
from kfloop.serving.worker_slot import WORKER_HEADER
from kfloop.storage import LocalStorage
from tests.serving.conftest import Server, Trained
from tests.serving.test_champion import _copy_version

pytestmark = pytest.mark.slow

WORKERS = 2


@dataclass
class Workers:
    """The server on its own copy of the trained workspace, and the request ids sent to it (one row each)."""

    server: Server
    config: Config
    storage: LocalStorage
    champion: str
    sent: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.training.model_name

    def v1(self, row: dict, request_id: str) -> httpx.Response:
        """One request on a connection of its own (the kernel picks a worker per connection)."""
        self.sent.append(request_id)
        url = f"{self.server.url}/v1/models/{self.name}:predict"
        response = httpx.post(url, json={"instances": [row]}, headers={"x-request-id": request_id}, timeout=10)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(scope="module")
def workers(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    root = tmp_path_factory.mktemp("workers")
    workspace = root / "ws"  # a copy: the promotion below must not reach the other tests' server
    shutil.copytree(trained.config.storage.root, workspace)

    def edit(data: dict) -> None:
        data["storage"]["root"] = str(workspace)
        data["serving"]["workers"] = WORKERS

    path = trained.write_config(root / "kfloop.json", edit)
    config, storage = load_config(path), LocalStorage(workspace)
    for written in (log_prefix(config), request_samples_prefix(config.training.model_name)):  # other tests' servers'
        shutil.rmtree(storage.uri(written), ignore_errors=True)
    server = Server(path).start()
    yield Workers(server, config, storage, trained.champion)
    server.stop()


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _count(metrics: str, name: str, protocol: str, status: str) -> float:
    needle = f'kfloop_requests_total{{model="{name}",protocol="{protocol}",status="{status}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(needle)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_requests_land_on_every_worker_and_metrics_count_each_once(trained: Trained, workers: Workers) -> None:
    rows = trained.request_rows(24)
    answered = [workers.v1(row, f"v1-{i}").headers[WORKER_HEADER] for i, row in enumerate(rows)]
    indices = {a.split(":")[0] for a in answered}
    pids = {int(a.split(":")[1]) for a in answered}
    assert indices == {str(i) for i in range(WORKERS)}, answered
    assert workers.server.proc is not None and pids == _children(workers.server.proc.pid)

    specs = request_specs(trained.config)
    for i, row in enumerate(rows[:10]):
        workers.sent.append(f"v2-{i}")
        body = {"id": f"v2-{i}", "inputs": v2_inputs([row], specs)}
        assert httpx.post(f"{workers.server.url}/v2/models/{workers.name}/infer", json=body).status_code == 200
    for i, row in enumerate(rows[:6]):  # a channel each: a channel is one connection, to one worker
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(workers.server.grpc_target, options=options) as channel:
            request = grpc_request(workers.name, [row], specs)
            request.id = f"grpc-{i}"
            workers.sent.append(request.id)
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)

    with httpx.Client(base_url=workers.server.url) as client:  # one keep-alive connection, one worker
        took = []
        for i, row in enumerate(rows[:10]):
            workers.sent.append(f"keep-alive-{i}")
            start = time.perf_counter()
            response = client.post(
                f"/v1/models/{workers.name}:predict",
                json={"instances": [row]},
                headers={"x-request-id": workers.sent[-1]},
            )
            took.append(time.perf_counter() - start)
            assert response.status_code == 200
    assert sorted(took)[5] < 0.02, took  # a worker's socket without TCP_NODELAY: 40 ms each (delayed ACK)

    metrics = httpx.get(f"{workers.server.url}/metrics").text  # whichever worker answers: every worker's counts
    counts = {p: _count(metrics, workers.name, p, s) for p, s in (("v1", "200"), ("v2", "200"), ("grpc", "OK"))}
    assert counts == {"v1": 34.0, "v2": 10.0, "grpc": 6.0}  # no warm-up, no request twice
    assert f'kfloop_model_version_info{{model="{workers.name}",version="{workers.champion}"}} 1.0' in metrics


def test_a_promotion_switches_every_worker(trained: Trained, workers: Workers) -> None:
    registry = ModelRegistry(workers.storage, workers.name)
    new = _copy_version(trained, registry)
    registry.promote(new, "switch every worker")
    row = trained.request_rows(1)[0]
    latest: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _ in range(4):
            response = workers.v1(row, f"switch-{len(workers.sent)}")
            latest[response.headers[WORKER_HEADER].split(":")[0]] = response.json()["model_version"]
        if len(latest) == WORKERS and set(latest.values()) == {new}:
            break
        time.sleep(0.2)
    assert latest == dict.fromkeys(map(str, range(WORKERS)), new)
    metrics = httpx.get(f"{workers.server.url}/metrics").text
    assert f'kfloop_model_version_info{{model="{workers.name}",version="{new}"}} 1.0' in metrics
    assert f'kfloop_model_version_info{{model="{workers.name}",version="{workers.champion}"}} 0.0' in metrics


def test_after_a_clean_stop_the_log_has_every_row_once_and_the_samples_every_request(workers: Workers) -> None:
    assert workers.server.stop() == 0, workers.server.output()
    table = read_inference_log(workers.storage, workers.config)
    logged = table.column("request_id").to_pylist()
    assert sorted(logged) == sorted(workers.sent)  # every request's one row, none twice, no warm-up
    files = [k for k in workers.storage.list(f"{log_prefix(workers.config)}/") if k.endswith(".parquet")]
    assert {k.rsplit("/", 1)[1].split("-")[1] for k in files} == {f"w{i}" for i in range(WORKERS)}  # both wrote
    now = datetime.now(UTC)
    samples = read_request_samples(workers.storage, workers.name, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert sum(s.requests for s in samples) == len(workers.sent)
