"""A lease on a storage key, so two promotions cannot interleave (local directory or S3 alike).

Built on :meth:`Storage.create_exclusive`. A lease older than ``stale_after`` is taken over: a
killed process must not block the registry forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from kfloop.errors import StorageError
from kfloop.storage import Storage


@contextlib.contextmanager
def lease(storage: Storage, key: str, timeout_s: float = 30.0, stale_after_s: float = 120.0) -> Iterator[None]:
    """Hold ``key`` exclusively for the block; raises StorageError after ``timeout_s`` of waiting."""
    token = secrets.token_hex(8)
    body = json.dumps(
        {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    ).encode()
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while not storage.create_exclusive(key, body):
        try:
            held = json.loads(storage.read_text(key))
            age = (datetime.now(UTC) - datetime.fromisoformat(held["at"])).total_seconds()
        except (FileNotFoundError, ValueError, KeyError):
            continue  # released meanwhile (or half-visible): try again at once
        if age > stale_after_s:
            storage.delete(key)  # the holder died; take over
            continue
        if time.monotonic() > deadline:
            raise StorageError(f"{storage.uri(key)}: held by {held.get('host')}:{held.get('pid')} since {held['at']}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        storage.delete(key)
