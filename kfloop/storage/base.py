"""Workspace storage interface: one key space, two backends (local directory, S3 bucket).

Keys are ``/``-separated relative paths. Every write is atomic per object: readers see the old object
or the new one, never a partial one. Multi-object commits are built on top (see ``kfloop.lake``).
"""

from __future__ import annotations

import abc
from datetime import datetime
from pathlib import Path


class Storage(abc.ABC):
    """The operations stages need; both backends pass the same test suite (tests/kfloop/storage/test_storage.py)."""

    #: How coarse :meth:`modified` may be (S3 reports whole seconds); leases add it before calling a
    #: holder stale, so rounding never makes a live lease look older than it is.
    mtime_resolution_s: float = 1.0

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Human-readable URI of ``key`` (``/abs/path`` or ``s3://bucket/prefix/key``)."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Whole object; raises ``FileNotFoundError`` if absent."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomically create or replace an object."""

    @abc.abstractmethod
    def upload_file(self, local_path: Path, key: str) -> None:
        """Atomically store a local file as ``key`` (streamed, not read into memory)."""

    def move_file(self, local_path: Path, key: str) -> None:
        """Store a local file that is not needed afterwards (a backend may rename instead of copying)."""
        self.upload_file(local_path, key)
        local_path.unlink(missing_ok=True)

    @abc.abstractmethod
    def download_file(self, key: str, local_path: Path) -> None:
        """Copy ``key`` into a local file; raises ``FileNotFoundError`` if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursive), sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; absent is not an error."""

    @abc.abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist (atomically); False if it already did. Locks and
        version numbers are built on this."""

    @abc.abstractmethod
    def modified(self, key: str) -> datetime:
        """When ``key`` was last written (UTC, aware); raises ``FileNotFoundError`` if absent. Leases
        judge staleness by it, so an unreadable lock still ages."""

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None:
        """Atomically create or replace ``dst_key`` with the content of ``src_key`` without passing the
        bytes through this process where the backend allows (hard link, server-side copy); raises
        ``FileNotFoundError`` if ``src_key`` is absent. Commits publish staged objects with it."""

    def local_path(self, key: str) -> Path | None:
        """A path readable in place, for backends that have one (avoids a copy); None otherwise."""
        return None

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))
