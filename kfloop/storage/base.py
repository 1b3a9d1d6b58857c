"""Workspace storage interface: one key space, two backends (local directory, S3 bucket).

Keys are ``/``-separated relative paths. Every write is atomic per object: readers see the old object
or the new one, never a partial one. Multi-object commits are built on top (see ``kfloop.lake``).
"""

from __future__ import annotations

import abc
from pathlib import Path


class Storage(abc.ABC):
    """The operations stages need; both backends pass the same test suite (tests/test_storage.py)."""

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

    def local_path(self, key: str) -> Path | None:
        """A path readable in place, for backends that have one (avoids a copy); None otherwise."""
        return None

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))
