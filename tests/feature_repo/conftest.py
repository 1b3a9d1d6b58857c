"""Fixtures for the feature store tests: the same suite against SQLite and a real redis-server.

Test modules outside this folder import ``online_backend`` and ``redis_server`` from here; the
Redis process is shared by every importer (one server per session), flushed before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.redis_server import REDIS_SERVER, RedisServer
from tests.feature_repo.harness import OnlineBackend, redis_backend, sqlite_backend

_SHARED: dict[str, RedisServer] = {}  # one redis-server per session, whichever module asks first


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free localhost port, without persistence."""
    assert os.access(REDIS_SERVER, os.X_OK), f"{REDIS_SERVER} not installed (apt-get install redis-server)"
    server = _SHARED.get("session")
    if server is None or not server.alive():
        server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
        server.start()
        _SHARED["session"] = server
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def online_backend(request: pytest.FixtureRequest) -> OnlineBackend:
    """Each test using this runs twice: on the SQLite online store and on Redis (empty at the start)."""
    if request.param == "sqlite":
        return sqlite_backend()
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return redis_backend(server)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, free to be stopped and restarted (its RDB lives in tmp_path)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
