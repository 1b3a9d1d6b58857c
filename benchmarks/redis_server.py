"""A real ``redis-server`` process on a free localhost port, for benchmarks and tests alike.

``stop(save=True)`` then ``start()`` is a restart that keeps the data (RDB in ``workdir``); ``stop()``
alone loses it (no persistence configured).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; nothing listens until :meth:`start`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if not Path(REDIS_SERVER).is_file():
            raise RuntimeError(f"{REDIS_SERVER} not found: install the redis-server package")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.workdir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self, save: bool = False) -> None:
        """Shut the server down (``SHUTDOWN SAVE`` writes an RDB the next start loads)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if save:
            with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it exits
                self.client().shutdown(save=True)
        else:
            self.proc.terminate()
        self.proc.wait(timeout=15)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A client without redis-py's default retries (they back off for seconds on a stopped server)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def flush(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushall()


def start_redis() -> RedisServer:
    """A throwaway server in a temporary directory, stopped and removed when the process exits."""
    server = RedisServer(Path(tempfile.mkdtemp(prefix="kfloop-redis-")))

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)

    atexit.register(cleanup)
    server.start()
    return server
