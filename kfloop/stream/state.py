"""The stream worker's per-entity event histories, kept in Redis so a restarted (or another) worker continues.

Two keys per view and entity, in one hash slot per project (so a Redis Cluster takes the multi-key transaction):
``kfloop:{<project>}:stream:<view>:<entity JSON>`` is a list of the history's events (JSON each, sorted by event
time and arrival), ``…:v`` a version that changes with every write. A batch writes only what changed: the new
events appended and the expired ones trimmed from the front (RPUSH, LTRIM), or the whole list when a late event
landed inside it. Several workers of one consumer group receive records of the same entity (Redis Streams does not
partition by key, and the views of one event have different entities), so a batch is applied optimistically:
WATCH the touched histories, compute and write online, then MULTI/EXEC the changes and versions. When another
worker changed one of them in between, EXEC fails and the batch is computed again from the newer histories and
written online again: the last write of every entity comes from its newest history. A worker killed before EXEC
recomputes the same rows from the re-delivered records.

Each worker keeps its entities' state in memory with their version (:class:`kfloop.stream.engine.Windows`) and
reads from Redis only the histories whose version moved (another worker wrote them): with one worker, a batch
reads versions, not histories.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

import orjson
import redis

from kfloop.errors import StorageError
from kfloop.stream.engine import Change, Row, Windows

#: Attempts of one batch against concurrent workers before the worker gives up (and restarts, re-reading it).
MAX_ATTEMPTS = 20

#: view → entity field → how its stored history changes.
Changes = dict[str, dict[str, Change]]


def history_key(project: str, view: str, entity: str) -> str:
    return f"kfloop:{{{project}}}:stream:{view}:{entity}"


def version_key(project: str, view: str, entity: str) -> str:
    return history_key(project, view, entity) + ":v"


class RedisHistories:
    """Load-compute-store of one project's histories, safe against other workers doing the same."""

    def __init__(self, client: redis.Redis, project: str) -> None:
        self.client, self.project = client, project
        self.conflicts = 0  # batches computed again because another worker changed a history first
        self._legacy: set[tuple[str, str]] = set()  # histories of this batch stored as a string (before 0.16)

    def _read(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[Row]]:
        """The stored histories of ``keys`` (read on another connection: the WATCH on ours still guards them).
        A history a kfloop before 0.16 stored as one JSON string is read as such (its next write is a list)."""
        if not keys:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for view, entity in keys:
            pipe.lrange(history_key(self.project, view, entity), 0, -1)
        out = {}
        for key, items in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(items, redis.ResponseError) and "WRONGTYPE" in str(items):
                body = self.client.get(history_key(self.project, *key))
                out[key] = [tuple(r) for r in orjson.loads(body)] if body else []
                self._legacy.add(key)
            elif isinstance(items, Exception):
                raise items
            else:
                out[key] = [tuple(orjson.loads(i)) for i in items]
        return out

    def apply(
        self, touched: Mapping[str, list[str]], windows: Mapping[str, Windows], compute: Callable[[], Changes]
    ) -> Changes:
        """Bring the state of ``touched`` (view → entity fields) in ``windows`` up to the store's, let ``compute``
        apply the batch (it may write online; it runs again after a conflict), and store the changes atomically."""
        keys = [(view, e) for view, entities in touched.items() for e in entities]
        if not keys:
            return compute()
        self._legacy = set()
        try:
            for _ in range(MAX_ATTEMPTS):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(*(history_key(self.project, v, e) for v, e in keys))
                        versions = pipe.mget([version_key(self.project, v, e) for v, e in keys])
                        stale = [
                            (k, ver)
                            for k, ver in zip(keys, versions, strict=True)
                            if not windows[k[0]].fresh(k[1], ver)
                        ]
                        stored = self._read([k for k, _ in stale])
                        for (view, entity), ver in stale:
                            windows[view].load(entity, ver, stored[(view, entity)])
                        changes = compute()
                        version = secrets.token_hex(8).encode()
                        pipe.multi()
                        self._write(pipe, changes, windows, version)
                        pipe.execute()
                        for view, per_entity in changes.items():
                            windows[view].committed(per_entity, version)
                        return changes
                    except redis.WatchError:
                        self.conflicts += 1  # another worker changed a history we read: compute again
                        for view, entities in touched.items():
                            windows[view].forget(entities)
                    except BaseException:
                        for view, entities in touched.items():
                            windows[view].forget(entities)  # half-applied in memory: read it again next time
                        raise
        except redis.RedisError as err:
            raise StorageError(f"stream state: {type(err).__name__}: {err}") from err
        raise StorageError(
            f"stream state: {MAX_ATTEMPTS} attempts of one batch conflicted with other workers; the records stay "
            "pending and are read again"
        )

    def _write(
        self, pipe: redis.client.Pipeline, changes: Changes, windows: Mapping[str, Windows], version: bytes
    ) -> None:
        for view, per_entity in changes.items():
            for entity, change in per_entity.items():
                key = history_key(self.project, view, entity)
                rows = change.replace
                if rows is None and (view, entity) in self._legacy:
                    rows = windows[view].history(entity)  # a string to become a list: written whole
                if rows is not None:
                    pipe.delete(key)
                    if rows:
                        pipe.rpush(key, *map(orjson.dumps, rows))
                else:
                    if change.append:
                        pipe.rpush(key, *map(orjson.dumps, change.append))
                    if change.trim:
                        pipe.ltrim(key, change.trim, -1)
                pipe.set(version_key(self.project, view, entity), version)

    def entities(self, view: str) -> int:
        """How many entities of ``view`` have a history (a scan: for status, not the hot path)."""
        pattern = history_key(self.project, view, "*")
        return sum(1 for k in self.client.scan_iter(match=pattern, count=1000) if not k.endswith(b":v"))
