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
) -> Iterator[LocalServer]:
    """Start ``kfloop serve -c config_path`` (the champion, or ``version`` pinned) on free ports, wait until
    it is ready, yield it, then stop it with SIGTERM (a kill after 60 s). Its output goes to a temporary
    file, quoted in the error when it exits early or is not ready within ``timeout``."""
    http, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "kfloop", "serve", "-c", str(config_path), "--http-port", str(http)]
    cmd += ["--grpc-port", str(grpc_port), *(["--version", version] if version else [])]
    log = tempfile.NamedTemporaryFile(prefix="kfloop-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=dict(environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        client = ServingClient.for_config(config, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}")
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                out = Path(log.name).read_text(errors="replace")
                raise KfloopError(f"kfloop serve exited with {proc.returncode}: {out.strip()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{client.http_base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() - started > timeout:
                raise KfloopError(f"kfloop serve was not ready after {timeout:.0f} s")
            time.sleep(0.2)
        yield LocalServer(client, proc, time.monotonic() - started)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)
