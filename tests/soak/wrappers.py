"""Storage wrappers the soak puts around a lane's real storage: they delegate every call and only watch or
interrupt writes (counting them, pausing at one for a SIGKILL, or failing them like a full disk)."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from kfloop.storage import Storage

#: The calls that change the workspace (the SIGKILL fault picks one of them to die before).
MUTATIONS = ("write_bytes", "upload_file", "move_file", "copy", "delete", "create_exclusive")


class Delegating(Storage):
    """Every call goes to ``inner``; subclasses hook :meth:`_before` (called before each mutation)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.mtime_resolution_s = inner.mtime_resolution_s

    def _before(self, op: str, key: str, size: int) -> None:
        """Called before each mutation, with the bytes it writes (0 for deletes and copies)."""

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._before("write_bytes", key, len(data))
        self.inner.write_bytes(key, data)

    def upload_file(self, local_path: Path, key: str) -> None:
        self._before("upload_file", key, local_path.stat().st_size)
        self.inner.upload_file(local_path, key)

    def move_file(self, local_path: Path, key: str) -> None:
        self._before("move_file", key, local_path.stat().st_size)
        self.inner.move_file(local_path, key)

    def download_file(self, key: str, local_path: Path) -> None:
        self.inner.download_file(key, local_path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._before("delete", key, 0)
        self.inner.delete(key)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        self._before("create_exclusive", key, len(data))
        return self.inner.create_exclusive(key, data)

    def modified(self, key: str) -> datetime:
        return self.inner.modified(key)

    def copy(self, src_key: str, dst_key: str) -> None:
        self._before("copy", dst_key, 0)
        self.inner.copy(src_key, dst_key)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)


class Counting(Delegating):
    """Counts mutations and bytes written per pipeline step (``step`` is set by the runner): the SIGKILL fault
    draws its kill point and the full-disk fault its free space from what earlier runs did."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.step = ""
        self.ops: Counter[str] = Counter()
        self.bytes = 0
        self._lock = threading.Lock()  # lease heartbeats write from their own threads

    def _before(self, op: str, key: str, size: int) -> None:
        with self._lock:
            self.ops[self.step] += 1
            self.bytes += size


class SimulatedFullDisk(Delegating):
    """A disk with ``free`` bytes left: a write that does not fit fails with ENOSPC, as a full filesystem's would.
    Only used where no small tmpfs can be mounted, and the soak's report says so."""

    def __init__(self, inner: Storage, free: int) -> None:
        super().__init__(inner)
        self.free = free
        self._lock = threading.Lock()

    def _before(self, op: str, key: str, size: int) -> None:
        if op in ("delete", "copy"):  # a copy on one local filesystem is a hard link
            return
        with self._lock:
            if size > self.free:
                raise OSError(errno.ENOSPC, "No space left on device (simulated full disk)", self.uri(key))
            self.free -= size


class PauseAt(Delegating):
    """Stops before the ``at``-th mutation: says so on stdout (``PAUSED n op key``) and waits to be killed."""

    def __init__(self, inner: Storage, at: int) -> None:
        super().__init__(inner)
        self.at = at
        self.seen = 0
        self._lock = threading.Lock()

    def _before(self, op: str, key: str, size: int) -> None:
        with self._lock:
            self.seen += 1
            if self.seen != self.at:
                return
        sys.stdout.write(f"PAUSED {self.seen} {op} {key}\n")
        sys.stdout.flush()
        time.sleep(120)  # the soak sends SIGKILL now; should it not, give up rather than hang
        os._exit(3)
