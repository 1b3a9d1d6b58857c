"""A ``kfloop serve`` of its own process, for as long as a ``with`` block: what ``serve-check`` and the
closed-loop demo talk to, over the same V1/V2/gRPC endpoints an application uses."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from kfloop.config import Config
from kfloop.errors import KfloopError
from kfloop.serving.client import ServingClient


def free_port() -> int:
    """A TCP port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    """The running server: its client, its process, and how long it took to become ready."""

    client: ServingClient
    process: subprocess.Popen
    startup_s: float = 0.0

    @property
    def clean_exit(self) -> bool:
        """Whether it stopped on SIGTERM as asked (valid after the ``with`` block)."""
        return self.process.returncode in (0, -signal.SIGTERM)


@contextlib.contextmanager
def running_server(
    config: Config,
    config_path: Path,
    environ: Mapping[str, str],
    *,
    version: str | None = None,
    timeout: float = 120.0,
    log_path: Path | None = None,
) -> Iterator[LocalServer]:
    """Start ``kfloop serve -c config_path`` (the champion, or ``version`` pinned) on free ports, wait until
    it is ready, yield it, then stop it with SIGTERM (a kill after 60 s). Its output goes to ``log_path``
    (kept), or a temporary file (removed), quoted in the error when it exits early or is not ready in time."""
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log = (
        open(log_path, "w+b")  # noqa: SIM115 (closed in finally, after the server stopped)
        if log_path is not None
        else tempfile.NamedTemporaryFile(prefix="kfloop-serve-", suffix=".log", delete=False)  # noqa: SIM115
    )
    proc: subprocess.Popen | None = None
    try:
        started = time.monotonic()
        for attempt in range(PORT_ATTEMPTS):
            http, grpc_port = free_port(), free_port()
            cmd = [sys.executable, "-m", "kfloop", "serve", "-c", str(config_path), "--http-port", str(http)]
            cmd += ["--grpc-port", str(grpc_port), *(["--version", version] if version else [])]
            log.seek(0)
            log.truncate()
            proc = subprocess.Popen(cmd, env=dict(environ), stdout=log, stderr=subprocess.STDOUT)
            client = ServingClient.for_config(config, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}")
            if _ready(proc, client, Path(log.name), started, timeout, last=attempt == PORT_ATTEMPTS - 1):
                break
        assert proc is not None
        yield LocalServer(client, proc, time.monotonic() - started)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if log_path is None:
            Path(log.name).unlink(missing_ok=True)


#: A free port may be taken by another process between the probe and the server's bind: try new ones.
PORT_ATTEMPTS = 3
_PORT_TAKEN = "Address already in use"


def _ready(
    proc: subprocess.Popen, client: ServingClient, log: Path, started: float, timeout: float, *, last: bool
) -> bool:
    """True once the server is ready; False when it exited because a port was taken meanwhile (and this is
    not the ``last`` attempt); raises when it exited otherwise or is not ready within ``timeout``."""
    while True:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")
            if _PORT_TAKEN in out and not last:
                return False
            raise KfloopError(f"kfloop serve exited with {proc.returncode}: {out.strip()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{client.http_base}/v2/health/ready", timeout=1).status_code == 200:
                return True
        if time.monotonic() - started > timeout:
            raise KfloopError(f"kfloop serve was not ready after {timeout:.0f} s")
        time.sleep(0.2)
