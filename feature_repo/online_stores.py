"""Feast's SQLite and Redis online stores with one more read: every feature view of a request at once.

Why: Feast's ``online_read`` reads one view per call. Serving asks several views per request, so it paid one
SQLite statement (or one Redis round trip) per view, plus per row work it does not need: SQLite converts the
event timestamp of every feature row through ``datetime`` and re-stamps its zone, Redis parses the values of
every requested field into a dict. ``online_read_many`` reads all views of a request in one SQLite statement
(the views' ``SELECT``s joined with ``UNION ALL``) or one Redis pipeline (one ``HMGET`` per entity hash: the
views of one entity share Feast's hash), converts one timestamp per (view, entity) and hands back the
requested features' stored bytes for the caller to parse once. ``prepare_many`` resolves what does not change
between requests (table names, the SQL text, Redis field hashes) once, for a caller that reads the same views
again and again (serving).

It is still Feast's store doing the read: these are subclasses of Feast's ``SqliteOnlineStore`` and
``RedisOnlineStore`` that read through their own connection handling (``_get_conn``, ``_get_client`` and
``_read_hash_fields``, so a Redis cluster or the GLIDE client work too), the same tables, hashes, keys and
value encoding; nothing is written differently, so every other Feast client reads the same data. The repo's
``online_store.type`` stays ``sqlite`` / ``redis`` (kfloop's writers, deletes and erasure switch on it):
:func:`batch_store` gives the reading subclass for the store Feast opened from that config.

What comes back matches ``online_read`` field for field, with one definition where Feast's is arbitrary: a
SQLite row's event time is its newest feature row's (Feast takes whichever row the index returns last; kfloop
writes every feature of a row with one time, so both agree). ``tests/feature_repo/test_online_read_many.py``
compares the serving lookup built on it with Feast's ``get_online_features``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from feast import FeatureView
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

from kfloop.errors import ConfigError

__all__ = [
    "BatchRedisOnlineStore",
    "BatchSqliteOnlineStore",
    "PreparedRead",
    "StoredRow",
    "ViewFeatures",
    "ViewKeys",
    "batch_store",
]


class ViewFeatures(NamedTuple):
    """One feature view of a read and the features to return (the view's field names, not the service's aliases)."""

    view: FeatureView
    features: tuple[str, ...]


class ViewKeys(NamedTuple):
    """One feature view's part of a one-off read: the features to return and the entities, as stored keys."""

    view: FeatureView
    features: Sequence[str]
    keys: Sequence[bytes]  # serialize_entity_key(EntityKey, version) of each entity, as Feast stores them


#: One entity of one view: None when the store holds no set value of the view for it (Feast: no row, or a row of
#: empty values), else (event time, the stored bytes of each requested feature: a serialized ``ValueProto``,
#: None where it is not stored). Parsing is the caller's: it converts each value once, in one pass.
StoredRow = tuple[datetime | None, list[bytes | None]] | None


class PreparedRead(Protocol):
    def read(self, keys: Sequence[Sequence[bytes]]) -> list[list[StoredRow]]:
        """Per view (as prepared), per key of ``keys[view]``: its ``StoredRow``, in the order asked."""
        ...


class BatchReads(Protocol):
    def prepare_many(self, config: RepoConfig, views: Sequence[ViewFeatures]) -> PreparedRead: ...

    def online_read_many(self, config: RepoConfig, reads: Sequence[ViewKeys]) -> list[list[StoredRow]]: ...


def batch_store(online_store: OnlineStore | None) -> BatchReads:
    """The multi-view reader for the online store Feast opened (itself if it already is one)."""
    if hasattr(online_store, "online_read_many"):
        return online_store  # type: ignore[return-value]
    if isinstance(online_store, SqliteOnlineStore):
        return BatchSqliteOnlineStore()
    if isinstance(online_store, RedisOnlineStore):
        return BatchRedisOnlineStore()
    raise ConfigError(f"features.online_store: {type(online_store).__name__} has no multi-view read (sqlite, redis)")


class _ReadMany:
    """``online_read_many``: a read prepared for these views, used once."""

    def prepare_many(self, config: RepoConfig, views: Sequence[ViewFeatures]) -> PreparedRead:
        raise NotImplementedError

    def online_read_many(self, config: RepoConfig, reads: Sequence[ViewKeys]) -> list[list[StoredRow]]:
        """Per read, per key: its ``StoredRow``, in the order asked (one statement / one pipeline)."""
        prepared = self.prepare_many(config, [ViewFeatures(r.view, tuple(r.features)) for r in reads])
        return prepared.read([r.keys for r in reads])


# --- SQLite ---------------------------------------------------------------------------------------------------


def _sqlite_time(raw: object) -> datetime | None:
    """Feast's reading of ``event_ts``: epoch seconds to a naive ``datetime.fromtimestamp`` (its converter),
    then stamped UTC (``online_read``). The column is read as ``+event_ts`` (no declared type: no converter
    per feature row), so the conversion happens here, once per (view, entity)."""
    if raw is None:
        return None
    return datetime.fromtimestamp(int(raw)).replace(tzinfo=UTC)  # type: ignore[call-overload]


def _where(n: int) -> str:
    # one key is matched with `=`: SQLite runs `IN (?)` through a temporary b-tree, a quarter slower here
    return "entity_key = ?" if n == 1 else f"entity_key IN ({','.join('?' * n)})"


@functools.lru_cache(maxsize=256)
def _union_sql(tables: tuple[str, ...], sizes: tuple[int, ...]) -> str:
    """One statement over every view: the rows of ``sizes[i]`` keys from ``tables[i]``, tagged ``i``."""
    return " UNION ALL ".join(
        f"SELECT {i}, entity_key, feature_name, value, +event_ts FROM {table} WHERE {_where(n)}"
        for i, (table, n) in enumerate(zip(tables, sizes, strict=True))
        if n
    )


@functools.lru_cache(maxsize=64)
def _single_sql(tables: tuple[str, ...]) -> str:
    """``_union_sql`` for one key per view (a serving request): the key column is not needed."""
    return " UNION ALL ".join(
        f"SELECT {i}, feature_name, value, +event_ts FROM {table} WHERE entity_key = ?"
        for i, table in enumerate(tables)
    )


def _add(entry: list | None, name: str, value: bytes, ts: object) -> list:
    """One feature row into its (view, entity)'s [newest event_ts, {feature: stored bytes}]."""
    if entry is None:
        return [ts, {name: value}]
    entry[1][name] = value
    if ts is not None and (entry[0] is None or ts > entry[0]):  # type: ignore[operator]
        entry[0] = ts
    return entry


def _stored_row(entry: list | None, features: tuple[str, ...]) -> StoredRow:
    """Every stored feature of the view decides presence (as Feast's row dict does); an empty blob is unset."""
    if entry is None or not any(entry[1].values()):
        return None
    values = entry[1]
    return _sqlite_time(entry[0]), [values.get(f) for f in features]


@dataclass(frozen=True)
class _SqliteRead:
    store: SqliteOnlineStore
    config: RepoConfig
    tables: tuple[str, ...]  # quoted, as Feast names them
    features: tuple[tuple[str, ...], ...]

    def read(self, keys: Sequence[Sequence[bytes]]) -> list[list[StoredRow]]:
        """One ``SELECT`` per view joined by ``UNION ALL``, as many statements as SQLite's parameter limit needs."""
        if not keys:
            return []
        conn = self.store._get_conn(self.config)
        if all(len(k) == 1 for k in keys):
            one: list[list | None] = [None] * len(keys)
            for i, name, value, ts in conn.execute(_single_sql(self.tables), [k[0] for k in keys]):
                one[i] = _add(one[i], name, value, ts)
            return [[_stored_row(entry, features)] for entry, features in zip(one, self.features, strict=True)]
        n = max(map(len, keys), default=0)
        step = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(1, len(keys)))
        found: list[dict[bytes, list]] = [{} for _ in keys]  # per view: key → [newest event_ts, {name: blob}]
        for start in range(0, n, step):
            chunk = keys if n <= step else [k[start : start + step] for k in keys]
            sql = _union_sql(self.tables, tuple(map(len, chunk)))
            for i, key, name, value, ts in conn.execute(sql, [k for ks in chunk for k in ks]):
                found[i][key] = _add(found[i].get(key), name, value, ts)
        return [
            [_stored_row(by_key.get(key), features) for key in view_keys]
            for features, by_key, view_keys in zip(self.features, found, keys, strict=True)
        ]


class BatchSqliteOnlineStore(_ReadMany, SqliteOnlineStore):
    """Feast's SQLite online store, plus every view of a request in one statement (``online_read_many``)."""

    def prepare_many(self, config: RepoConfig, views: Sequence[ViewFeatures]) -> PreparedRead:
        versioned = config.registry.enable_online_feature_view_versioning
        tables = tuple(_quote_id(compute_table_id(config.project, v.view, versioned)) for v in views)
        return _SqliteRead(self, config, tables, tuple(tuple(v.features) for v in views))


# --- Redis ----------------------------------------------------------------------------------------------------


def _redis_time(blob: bytes | None) -> datetime:
    """Feast's reading of the ``_ts:<view>`` field (the epoch when it is missing)."""
    ts = Timestamp()
    if blob:
        ts.ParseFromString(blob)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1_000_000_000.0, tz=UTC)


def _hash_fields(view: str, features: Sequence[str]) -> tuple[bytes | str, ...]:
    """The hash fields Feast keeps a view's features under (murmur3 of ``view:feature``), then its timestamp's."""
    return (*(_mmh3(f"{view}:{f}") for f in features), f"_ts:{view}")


@dataclass(frozen=True)
class _RedisRead:
    store: RedisOnlineStore
    config: RepoConfig
    project: bytes
    fields: tuple[tuple[bytes | str, ...], ...]  # per view: its features' hash fields, then its timestamp's

    def read(self, keys: Sequence[Sequence[bytes]]) -> list[list[StoredRow]]:
        """One ``HMGET`` per entity hash (views of one entity share it: their fields are asked together), all
        in one pipeline; a (view, entity) without any requested value is absent, as Feast's empty values."""
        project = self.project
        asked: dict[bytes, list[bytes | str]] = {}  # hash → fields asked, in order
        slots: list[list[tuple[bytes, int]]] = []  # per view, per key: (hash, offset of its first field)
        for fields, view_keys in zip(self.fields, keys, strict=True):
            placed: dict[bytes, tuple[bytes, int]] = {}  # a key asked twice in a batch is read once
            for key in view_keys:
                if key not in placed:
                    hkey = key + project
                    got = asked.setdefault(hkey, [])
                    placed[key] = (hkey, len(got))
                    got.extend(fields)
            slots.append([placed[key] for key in view_keys])
        replies = dict(zip(asked, self.store._read_hash_fields(self.config, list(asked.items())), strict=True))
        out: list[list[StoredRow]] = []
        for fields, at in zip(self.fields, slots, strict=True):
            width = len(fields) - 1
            rows: list[StoredRow] = []
            for hkey, offset in at:
                values = replies[hkey][offset : offset + width + 1]
                if not any(values[:width]):
                    rows.append(None)
                    continue
                rows.append((_redis_time(values[width]), values[:width]))
            out.append(rows)
        return out


class BatchRedisOnlineStore(_ReadMany, RedisOnlineStore):
    """Feast's Redis online store, plus every view of a request in one pipeline (``online_read_many``)."""

    def prepare_many(self, config: RepoConfig, views: Sequence[ViewFeatures]) -> PreparedRead:
        versioned = config.registry.enable_online_feature_view_versioning
        fields = tuple(_hash_fields(compute_versioned_name(v.view, versioned), v.features) for v in views)
        return _RedisRead(self, config, config.project.encode("utf-8"), fields)
