"""The stream worker's per-entity event histories, kept in Redis so a restarted (or another) worker continues.

Two keys per view and entity, in one hash slot per project (so a Redis Cluster takes the multi-key transaction):
``kfloop:{<project>}:stream:<view>:<entity JSON>`` holds the history, ``…:v`` a version that changes with every
write. Several workers of one consumer group receive records of the same entity (Redis Streams does not partition
by key, and the views of one event have different entities), so a batch is applied optimistically: WATCH the
touched histories, read them, compute and write online, then MULTI/EXEC the new histories and versions. When
another worker changed one of them in between, EXEC fails and the batch is computed again from the newer histories
and written online again: the last write of every entity comes from its newest history. A worker killed before
EXEC recomputes the same rows from the re-delivered records.

Each worker keeps the histories it read or wrote in memory with their version, and reads from Redis only those
whose version moved (another worker wrote them): with one worker, a batch reads versions, not histories.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

import orjson
import redis

from kfloop.errors import StorageError
from kfloop.stream.engine import Row

#: Attempts of one batch against concurrent workers before the worker gives up (and restarts, re-reading it).
MAX_ATTEMPTS = 20
#: Entities whose histories a worker keeps in memory (least recently used dropped first).
CACHE_ENTITIES = 200_000

#: view → entity field → history.
Histories = dict[str, dict[str, list[Row]]]


def history_key(project: str, view: str, entity: str) -> str:
    return f"kfloop:{{{project}}}:stream:{view}:{entity}"


def version_key(project: str, view: str, entity: str) -> str:
    return history_key(project, view, entity) + ":v"


class RedisHistories:
    """Load-compute-store of one project's histories, safe against other workers doing the same."""

    def __init__(self, client: redis.Redis, project: str) -> None:
        self.client, self.project = client, project
        self.conflicts = 0  # batches computed again because another worker changed a history first
        self._cache: dict[tuple[str, str], tuple[bytes, list[Row]]] = {}  # (view, entity) → (version, history)

    def _load(self, pipe: redis.client.Pipeline, keys: list[tuple[str, str]]) -> Histories:
        """The histories of ``keys`` as they are now: cached ones whose version did not move, the rest read."""
        versions = dict(zip(keys, pipe.mget([version_key(self.project, v, e) for v, e in keys]), strict=True))
        stale = [k for k, ver in versions.items() if ver is None or self._cache.get(k, (None,))[0] != ver]
        bodies = pipe.mget([history_key(self.project, v, e) for v, e in stale]) if stale else []
        for key, body in zip(stale, bodies, strict=True):
            ver = versions[key]
            if body is None:
                self._cache.pop(key, None)
            else:
                self._cache[key] = (ver or b"", orjson.loads(body))
        loaded: Histories = {}
        for view, entity in keys:
            hit = self._cache.get((view, entity))
            loaded.setdefault(view, {})
            if hit is not None:
                loaded[view][entity] = hit[1]
        return loaded

    def apply(self, touched: Mapping[str, list[str]], compute: Callable[[Histories], Histories]) -> Histories:
        """Load the histories of ``touched`` (view → entity fields), let ``compute`` turn them into the changed
        ones (it may write online; it runs again after a conflict), and store those atomically."""
        keys = [(view, e) for view, entities in touched.items() for e in entities]
        if not keys:
            return compute({view: {} for view in touched})
        try:
            for _ in range(MAX_ATTEMPTS):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(*(history_key(self.project, v, e) for v, e in keys))
                        loaded = self._load(pipe, keys)
                        changed = compute({view: loaded.get(view, {}) for view in touched})
                        version = secrets.token_hex(8).encode()
                        writes = {}
                        for view, histories in changed.items():
                            for e, h in histories.items():
                                writes[history_key(self.project, view, e)] = orjson.dumps(h)
                                writes[version_key(self.project, view, e)] = version
                        pipe.multi()
                        if writes:
                            pipe.mset(writes)
                        pipe.execute()
                        self._remember(changed, version)
                        return changed
                    except redis.WatchError:
                        self.conflicts += 1
                        continue  # another worker changed a history we read: compute again from the new ones
        except redis.RedisError as err:
            raise StorageError(f"stream state: {type(err).__name__}: {err}") from err
        raise StorageError(
            f"stream state: {MAX_ATTEMPTS} attempts of one batch conflicted with other workers; the records stay "
            "pending and are read again"
        )

    def _remember(self, changed: Histories, version: bytes) -> None:
        for view, histories in changed.items():
            for e, h in histories.items():
                self._cache.pop((view, e), None)
                self._cache[(view, e)] = (version, h)
        while len(self._cache) > CACHE_ENTITIES:
            del self._cache[next(iter(self._cache))]

    def entities(self, view: str) -> int:
        """How many entities of ``view`` have a history (a scan: for status, not the hot path)."""
        pattern = history_key(self.project, view, "*")
        return sum(1 for k in self.client.scan_iter(match=pattern, count=1000) if not k.endswith(b":v"))
