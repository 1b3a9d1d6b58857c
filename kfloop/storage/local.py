"""Local-directory backend: atomic writes via a temporary sibling and ``os.replace``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from kfloop.files import atomic_write
from kfloop.storage.base import Storage


class LocalStorage(Storage):
    """Workspace in a directory; the embedded default."""

    mtime_resolution_s = 0.0

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"storage key {key!r} escapes the workspace root {self.root}")
        return path

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def _atomic_place(self, key: str, fill: Callable[[IO[bytes]], object]) -> None:
        atomic_write(self._path(key), fill)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_place(key, lambda fh: fh.write(data))

    def upload_file(self, local_path: Path, key: str) -> None:
        def fill(fh) -> None:  # type: ignore[no-untyped-def]
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

        self._atomic_place(key, fill)

    def move_file(self, local_path: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.stat(local_path).st_dev != os.stat(dest.parent).st_dev:
            super().move_file(local_path, key)
            return
        with open(local_path, "rb") as fh:  # durable before it becomes visible under its name
            os.fsync(fh.fileno())
        os.replace(local_path, dest)

    def download_file(self, key: str, local_path: Path) -> None:
        shutil.copyfile(self._path(key), local_path)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write a hidden temporary file, then ``os.link`` it to the name: the link fails if the name
        exists, and a reader never sees the object empty or half-written (an O_EXCL create would). On a
        filesystem without hard links (SMB, FUSE object stores …) fall back to an O_EXCL create: just as
        exclusive, and a reader that catches it half-written sees an unreadable lock, which leases wait for."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            return self._create_excl(path, data)
        finally:
            os.unlink(tmp)
        return True

    @staticmethod
    def _create_excl(path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def modified(self, key: str) -> datetime:
        return datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)

    def copy(self, src_key: str, dst_key: str) -> None:
        """A hard link under a temporary name, then ``os.replace`` (a copy across devices)."""
        src, dst = self._path(src_key), self._path(dst_key)
        if not src.is_file():
            raise FileNotFoundError(str(src))
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{os.urandom(6).hex()}.tmp"
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not allowed
            self.upload_file(src, dst_key)
            return
        try:
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
        ]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
