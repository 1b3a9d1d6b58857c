"""A trained, materialized workspace and real `kfloop serve` processes on free localhost ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from kfloop.components.train import train_and_register
from kfloop.config import Config, config_to_json, parse_config
from kfloop.demo import DEFAULT_START, DemoSpec, generate
from kfloop.registry import ModelRegistry
from kfloop.serving.clock import AS_OF_ENV
from tests.conftest import free_port
from tests.feature_repo.conftest import own_redis  # noqa: F401 (a fixture for the Redis tests)
from tests.feature_repo.harness import Loop, sqlite_backend

ROOT = Path(__file__).resolve().parents[2]
#: The end of the demo data the servers here serve (generated from DEFAULT_START over DemoSpec's days).
DEMO_END = DEFAULT_START + timedelta(days=DemoSpec(rows=1).days)


@pytest.fixture(scope="package", autouse=True)
def serving_clock_at_demo_end() -> Iterator[None]:
    """Every server started here answers as of the demo data's end (a replay of its months): on the wall
    clock its rows are older than the views' ttls, so every entity would be defaulted (test_ttl.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(AS_OF_ENV, DEMO_END.isoformat())
        yield


def relaxed(data: dict) -> None:
    """A quick model on a small demo: fewer epochs, and small request limits the error tests can reach."""
    data["training"]["epochs"] = 4
    data["serving"] = {
        "max_batch_rows": 500,
        "max_body_bytes": 256 * 1024,
        "reload_seconds": 0.5,
        "store_check_seconds": 0.5,
        "inference_log": {"flush_rows": 100, "flush_seconds": 1.0},
    }


@dataclass
class Trained:
    """A workspace with online features and a champion, plus the demo frame it was built from."""

    loop: Loop
    frame: pd.DataFrame
    champion: str

    @property
    def config(self) -> Config:
        return self.loop.config

    def request_rows(self, n: int, start: int = 0) -> list[dict]:
        """Rows as an application sends them: entity keys + request features of real transactions."""
        cols = list(dict.fromkeys([*self.config.source.entity_keys, *self.config.features.request_features]))
        rows = self.frame[cols].iloc[start : start + n].to_dict("records")
        return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows]

    def write_config(self, path: Path, edit: Callable[[dict], None] | None = None) -> Path:
        data = self.config.model_dump(mode="json")
        if edit is not None:
            edit(data)
        path.write_text(config_to_json(parse_config(data, str(path))))
        return path


def served_champion(root: Path, edit: Callable[[dict], None], rows: int, seed: int, run: str) -> Trained:
    """A workspace built from ``rows`` seeded demo rows under the config ``edit``, with online features and
    its model trained and promoted: what a serving test serves."""
    loop = Loop.create(root / "ws", sqlite_backend(), edit)
    frame = generate(DemoSpec(rows=rows, seed=seed)).frame
    loop.load(frame)
    loop.materialize()
    loop.training_set()
    card = train_and_register(loop.config, loop.storage, pipeline_run=run)
    ModelRegistry(loop.storage, loop.config.training.model_name).promote(card["version"], run.replace("-", " "))
    return Trained(loop, frame, card["version"])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return served_champion(tmp_path_factory.mktemp("serving"), relaxed, rows=6000, seed=13, run="serving-tests")


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float, path: str = "/v2/health/ready") -> None:
    """Until ``url``'s ``path`` (readiness) answers 200; the process's log in the error when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text(errors='replace')[-5000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text(errors='replace')[-5000:]}")


@dataclass
class Server:
    """One `kfloop serve` process."""

    config_path: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    entry: tuple[str, ...] = ("-m", "kfloop")  # what runs `kfloop` (a test may wrap it to inject a fault)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 90.0, ready: bool = True) -> Server:
        """Start and wait until ready (``ready=False``: only until live, for a server meant to be not ready)."""
        cmd = [sys.executable, *self.entry, "serve", "-c", str(self.config_path)]
        cmd += ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.args]
        self.log_path = self.config_path.with_suffix(f".{self.http_port}.log")
        out = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **self.env}
        )
        try:
            wait_ready(self.url, self.proc, self.log_path, timeout, "/v2/health/ready" if ready else "/v2/health/live")
        except RuntimeError:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a clean shutdown) and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(config_path: Path, *args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = Server(config_path, args=args, env=env or {})
        servers.append(server)
        return server.start(ready=ready)

    yield start
    for server in servers:
        server.stop()
