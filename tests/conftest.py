"""Shared fixtures: real servers (moto_server S3, a static HTTP server) on free localhost ports."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from minio import Minio

from kfloop.config import Config, load_config, parse_config
from kfloop.serving._kserve import import_kserve
from kfloop.storage import S3Credentials, S3Storage

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "examples" / "fraud" / "kfloop.yaml"
S3_CREDS = S3Credentials("testing-key", "testing-secret")

import_kserve()  # KServe parses sys.argv at its first import: pytest's flags are not its flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Until ``url``/-/ready answers 200 (Prometheus, Alertmanager); fails with the process's stderr if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited: {proc.stderr.read() if proc.stderr else ''}"
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{proc.args[0]} did not become ready at {url}")


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API endpoint: moto_server in its own process (MinIO's server is not installable here), its
    conditional PUTs made atomic as S3's are (tests/moto_atomic.py)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "moto_atomic.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_client(moto_endpoint: str) -> Minio:
    return Minio(moto_endpoint, access_key=S3_CREDS.access_key, secret_key=S3_CREDS.secret_key, secure=False)


@pytest.fixture
def bucket(s3_client: Minio, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, so tests sharing the server do not see each other's objects."""
    name = "t-" + str(abs(hash(request.node.nodeid)) % 10**12)
    if not s3_client.bucket_exists(name):
        s3_client.make_bucket(name)
    return name


@pytest.fixture
def s3_storage(s3_client: Minio, bucket: str) -> S3Storage:
    return S3Storage(s3_client, bucket, prefix="ws")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over real HTTP on localhost: (dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo_config(workspace: Path | None = None, **source: object) -> Config:
    """The demo config with the workspace and source fields overridden (same validation as a file)."""
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    if workspace is not None:
        data["storage"] = {"type": "local", "root": str(workspace)}
    data["source"].update(source)
    return parse_config(data, "test config")


#: Not copied into the wheel build's source tree: environments, caches, results, VCS data.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", ".kfloop", ".bench", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree, once per test session: the xdist workers share it (a file lock in the
    session's own temporary folder). It is built from a copy of the sources, so setuptools' build/ staging folder
    is never the checkout's (a stale one there would add deleted files; two sessions at once would share it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder
    dist = shared / "kfloop-wheel"
    with FileLock(str(shared / "kfloop-wheel.lock")):
        built = sorted(dist.glob("kfloop-*.whl"))
        if not built:
            staging = shared / "kfloop-wheel-building"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(REPO, staging / "src", ignore=_NOT_SOURCE)
            build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
            subprocess.run(
                [*build, "--outdir", str(staging / "dist"), str(staging / "src")],
                check=True,
                capture_output=True,
                timeout=300,
            )
            (staging / "dist").rename(dist)
            built = sorted(dist.glob("kfloop-*.whl"))
    (wheel,) = built
    return wheel


#: The test files that take longest (seconds on 2 cores, `--durations`), heaviest first. xdist hands out whole
#: files (``--dist loadfile``) in collection order, so these start first and no long file starts last: without
#: this order the suite waited ~2 minutes on one worker running the closed loop after the others had finished.
HEAVY_FIRST = (  # by measured duration (pytest --durations=0 on 2 quiet cores, -n 3), longest first
    "tests/pipelines/test_training.py",
    "tests/examples/test_closed_loop.py",
    "tests/serving/test_cli.py",
    "tests/examples/test_flights_example.py",
    "tests/serving/test_readiness.py",
    "tests/serving/test_table_features.py",
    "tests/serving/test_multiclass.py",
    "tests/serving/test_grafana_dashboard.py",
    "tests/monitoring/test_retrain.py",
    "tests/kfloop/test_lake_commit.py",
    "tests/serving/test_components.py",
    "tests/serving/test_inference_log.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first (a stable sort: every other file keeps its place, every file its test order)."""
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}

    def weight(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=weight)
