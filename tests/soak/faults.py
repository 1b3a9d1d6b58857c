"""The faults besides the S3 proxy's (proxy.py): a restartable redis-server, and a disk that can be filled up.

- Redis: a real ``redis-server`` with an append-only file fsynced on every write, so a restart, clean (SHUTDOWN)
  or a crash (SIGKILL), keeps every acknowledged write, as an online store configured for durability does. The
  soak restarts it right before or in the middle of the materialize step.
- Full disk: the local lane's workspace is a small tmpfs mounted for the soak; the fault fills it with a file
  until only a few KB are free, the run hits ENOSPC, the file is removed (the operator freed space) and the run is
  retried. Where no tmpfs can be mounted (not root, no CAP_SYS_ADMIN), a storage wrapper fails writes with ENOSPC
  instead, and :attr:`Disk.kind` says so in the report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kfloop.storage import Storage
from tests.soak.wrappers import SimulatedFullDisk

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` on a free localhost port, its append-only file in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def start(self, timeout: float = 15.0) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            raise RuntimeError(f"{REDIS_SERVER} not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        cmd += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with contextlib.closing(self.client()) as client:
                    client.ping()
                return
            except redis.exceptions.BusyLoadingError:  # replaying its append-only file
                time.sleep(0.02)
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self, *, crash: bool = False) -> None:
        """A clean shutdown (SIGTERM: redis-server flushes and exits), or a crash (SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        self.proc.wait(timeout=15)
        self.proc = None

    def restart(self, *, crash: bool) -> None:
        self.stop(crash=crash)
        self.start()
        self.restarts += 1


def _mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of ``size_mb`` at ``path``; the reason it could not be, or None."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "soak-tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


class Disk:
    """Where the local lane's workspace lives, and how it is filled up."""

    FILLER = "filler.bin"

    def __init__(self, root: Path, size_mb: int, *, allow_mount: bool = True) -> None:
        self.root = root
        self.size_mb = size_mb
        why = _mount_tmpfs(root, size_mb) if allow_mount else "tmpfs not requested"
        self.real = why is None
        self.why_simulated = why or ""
        self._simulated_free: int | None = None
        (root / "ws").mkdir(parents=True, exist_ok=True)

    @property
    def workspace(self) -> Path:
        return self.root / "ws"

    @property
    def kind(self) -> str:
        if self.real:
            return f"real: a {self.size_mb} MiB tmpfs filled with a file"
        return f"SIMULATED: a storage wrapper failing writes with ENOSPC (tmpfs not mountable: {self.why_simulated})"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int) -> None:
        """Leave only ``leave`` bytes free."""
        if not self.real:
            self._simulated_free = leave
            return
        size = max(0, self.free_bytes() - leave)
        fd = os.open(self.root / self.FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Free the space again."""
        self._simulated_free = None
        (self.root / self.FILLER).unlink(missing_ok=True)

    def wrap(self, storage: Storage) -> Storage:
        """The workspace storage as the pipeline sees it: as is on a real disk; while a simulated disk is
        full, behind the ENOSPC wrapper."""
        if self._simulated_free is None:
            return storage
        return SimulatedFullDisk(storage, self._simulated_free)

    def close(self) -> None:
        self.clear()
        if self.real:
            subprocess.run(["umount", str(self.root)], capture_output=True, check=False)
