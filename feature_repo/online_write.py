"""Write Arrow rows into Feast's SQLite or Redis online store as Feast would, from ``online_encode``'s bytes.

Why not Feast's ``online_write_batch``: it takes one proto per value (see ``online_encode``) and then stores them
one statement or one command at a time. The stored result here is the same, row for row and byte for byte
(``tests/feature_repo/test_online_encode.py`` compares both stores' contents and reads them back through Feast);
only the way there differs:

- SQLite: Feast's table, columns and upsert, but one statement per entity (its features as a multi-row
  ``VALUES``, the key and event time bound once) and the entities in key order, so the table's B-trees grow
  at their right edge instead of at random pages; the next chunk is encoded in a thread while SQLite stores
  the current one;
- Redis: Feast's ``HSET`` of each entity's hash (same key, fields, values, ``_ts`` field; ``EXPIRE`` with
  ``key_ttl_seconds``), packed into Redis's wire protocol with Arrow compute and sent on one connection in
  chunks, the replies checked like a pipeline's (the next chunk is sent before this one's replies are read).

Where it cannot promise the same bytes (another store type, Redis cluster/sentinel or deduplicating writes,
SQLite's vector/numeric columns, a column type ``online_encode`` does not encode), ``blocker`` says why and the
caller uses Feast's own path.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView, ValueType
from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
from feast.infra.online_stores.sqlite import _quote_id, _table_id
from feast.repo_config import RepoConfig
from redis.exceptions import ResponseError

from kfloop.feature_repo.online_encode import (
    encode_rows,
    entity_keys,
    sqlite_event_seconds,
    timestamp_protos,
    unsupported,
    value_texts,
)

__all__ = ["CHUNK_ROWS", "blocker", "sqlite_upsert_sql", "write_encoded"]

#: Entities encoded and written per step: bounds the Python objects alive at once (SQLite binds Python values).
CHUNK_ROWS = 20_000
_KEY_VERSION = 3  # entity_key_serialization_version this module writes (kfloop's repo settings use it)
_EMPTY = pa.scalar(b"", pa.binary())


def blocker(config: RepoConfig, view: FeatureView, table: pa.Table, entity: str, key_type: ValueType) -> str | None:
    """Why ``table`` cannot be written here byte-identically to Feast's own path, or None when it can."""
    if config.entity_key_serialization_version != _KEY_VERSION:
        return f"entity_key_serialization_version {config.entity_key_serialization_version} (encoded: 3)"
    store = config.online_store
    if store.type == "sqlite":
        if store.vector_enabled or getattr(store, "enable_openai_compatible_store", False):
            return "the SQLite store has vector or numeric value columns"
    elif store.type == "redis":
        if store.redis_type != "redis":
            return f"redis_type {store.redis_type} (encoded: a single redis server)"
        if not store.skip_dedup:
            return "skip_dedup is off (Feast reads each key's timestamp before writing)"
        name = compute_versioned_name(view, config.registry.enable_online_feature_view_versioning)
        if len({_mmh3(f"{name}:{f.name}") for f in view.features}) != len(view.features):
            return "two features share a Redis field hash"
    else:
        return f"online store type {store.type}"
    return unsupported(view, table, entity, key_type)


def write_encoded(store: FeatureStore, view: FeatureView, table: pa.Table, entity: str, key_type: ValueType) -> None:
    """Upsert every row of ``table`` (one per entity; the last row of an entity wins, as in Feast) into the
    store's online store; ``blocker`` must have returned None."""
    if table.num_rows == 0:
        return
    online = store._get_provider().online_store
    if store.config.online_store.type == "sqlite":
        _write_sqlite(store.config, online, view, table, entity, key_type)
    else:
        _write_redis(store.config, online, view, table, entity, key_type)


# --- SQLite -------------------------------------------------------------------------------------------------------


def _sqlite_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sqlite_upsert_sql(table_name: str, features: list[str]) -> str:
    """Feast's upsert (same columns, same conflict target and updates) with one ``VALUES`` row per feature:
    parameter 1 is the entity key, 2k/2k+1 feature k's value and text, the last one the event time."""
    last = 2 * len(features) + 2
    rows = ", ".join(
        f"(?1, {_sqlite_literal(name)}, ?{2 * i + 2}, ?{2 * i + 3}, ?{last}, NULL)" for i, name in enumerate(features)
    )
    return (
        f"INSERT INTO {_quote_id(table_name)} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        f"VALUES {rows} ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
    )


def _write_sqlite(
    config: RepoConfig, online, view: FeatureView, table: pa.Table, entity: str, key_type: ValueType
) -> None:
    """Chunks in entity-key order; the next chunk's parameters are built in a thread while SQLite stores the
    current one (sqlite3 releases the GIL while it steps a statement: two cores both work)."""
    features = [f.name for f in view.features]
    table = table.select([entity, view.batch_source.timestamp_field, *features])  # what is written, nothing else
    keys = entity_keys(table.column(entity), entity, key_type)
    order = pc.sort_indices(keys)  # stable: an entity's rows keep their order, its last row is written last
    sql = sqlite_upsert_sql(
        _table_id(config.project, view, config.registry.enable_online_feature_view_versioning), features
    )

    def params(lo: int) -> list[tuple]:
        """The statement's parameters for the entities at ``order[lo:lo + CHUNK_ROWS]``."""
        rows = order.slice(lo, CHUNK_ROWS)
        chunk = table.take(rows)  # a chunk at a time: no sorted copy of the whole table
        encoded = encode_rows(view, chunk, entity, key_type)
        columns: list[list] = [keys.take(rows).to_numpy(zero_copy_only=False).tolist()]
        for f in view.features:
            columns.append(encoded.values[f.name].to_numpy(zero_copy_only=False).tolist())
            columns.append(value_texts(chunk.column(f.name), f.dtype.to_value_type()))
        columns.append(sqlite_event_seconds(encoded.micros))
        return list(zip(*columns, strict=True))

    conn = online._get_conn(config)
    starts = range(0, table.num_rows, CHUNK_ROWS)
    if len(starts) == 1:  # a small write (the stream worker's): no thread to start
        with conn:
            conn.executemany(sql, params(0))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-encode") as encoder:
        pending = encoder.submit(params, starts[0])
        for i in range(len(starts)):
            ready = pending.result()
            if i + 1 < len(starts):
                pending = encoder.submit(params, starts[i + 1])
            with conn:  # a transaction per chunk, as Feast commits each online_write_batch call
                conn.executemany(sql, ready)


# --- Redis --------------------------------------------------------------------------------------------------------


class _Resp:
    """Redis wire-protocol pieces of one command per row, joined element-wise by Arrow."""

    def __init__(self) -> None:
        self.pieces: list[pa.Array | pa.Scalar] = []
        self._literal = b""

    def literal(self, data: bytes) -> None:
        self._literal += data

    def bulk_literal(self, data: bytes) -> None:
        self.literal(b"$%d\r\n%s\r\n" % (len(data), data))

    def bulk(self, column: pa.Array) -> None:
        """``$<length>\\r\\n<bytes>\\r\\n`` of each row."""
        self.literal(b"$")
        self._flush()
        self.pieces.append(pc.cast(pc.cast(pc.binary_length(column), pa.string()), pa.binary()))
        self.literal(b"\r\n")
        self._flush()
        self.pieces.append(column)
        self.literal(b"\r\n")

    def _flush(self) -> None:
        if self._literal:
            self.pieces.append(pa.scalar(self._literal, pa.binary()))
            self._literal = b""

    def joined(self) -> pa.Buffer:
        self._flush()
        out = pc.binary_join_element_wise(*self.pieces, _EMPTY)
        if out.null_count:  # a null piece would drop its row's command from the stream
            raise ValueError("a Redis command piece is null")
        offsets = np.frombuffer(out.buffers()[1], np.int32)
        start, end = int(offsets[out.offset]), int(offsets[out.offset + len(out)])
        return out.buffers()[2][start:end]


def _write_redis(
    config: RepoConfig, online, view: FeatureView, table: pa.Table, entity: str, key_type: ValueType
) -> None:
    """Chunks of ``HSET`` (+ ``EXPIRE``) commands on one connection; the next chunk is sent before the current
    chunk's replies are read, so the server works while this process parses."""
    store = config.online_store
    client = online._get_client(store)
    name = compute_versioned_name(view, config.registry.enable_online_feature_view_versioning)
    per_row = 2 if store.key_ttl_seconds else 1
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        unread = 0
        for lo in range(0, table.num_rows, CHUNK_ROWS):
            chunk = table.slice(lo, CHUNK_ROWS)
            conn.send_packed_command([_hset_commands(config, view, name, chunk, entity, key_type)])
            if unread:
                _replies(conn, unread)
            unread = chunk.num_rows * per_row
        if unread:
            _replies(conn, unread)
    except BaseException:
        conn.disconnect()  # replies may be left unread: this connection must not be reused
        raise
    finally:
        pool.release(conn)


def _hset_commands(
    config: RepoConfig, view: FeatureView, name: str, chunk: pa.Table, entity: str, key_type: ValueType
) -> pa.Buffer:
    """Feast's commands for each row of ``chunk``: ``HSET key _ts:<view> <ts> <field> <value>…`` (its field order),
    then ``EXPIRE key <key_ttl_seconds>`` when set, in the wire protocol."""
    rows = encode_rows(view, chunk, entity, key_type)
    keys = pc.binary_join_element_wise(rows.keys, pa.scalar(config.project.encode("utf-8"), pa.binary()), _EMPTY)
    cmd = _Resp()
    cmd.literal(b"*%d\r\n" % (2 + 2 * (len(view.features) + 1)))
    cmd.bulk_literal(b"HSET")
    cmd.bulk(keys)
    cmd.bulk_literal(f"_ts:{name}".encode())
    cmd.bulk(timestamp_protos(rows.micros))
    for f in view.features:
        cmd.bulk_literal(_mmh3(f"{name}:{f.name}"))
        cmd.bulk(rows.values[f.name])
    ttl = config.online_store.key_ttl_seconds
    if ttl:
        cmd.literal(b"*3\r\n")
        cmd.bulk_literal(b"EXPIRE")
        cmd.bulk(keys)
        cmd.bulk_literal(str(ttl).encode())
    return cmd.joined()


def _replies(conn, count: int) -> None:
    """Read ``count`` replies; raise the first error reply after reading them all (as a pipeline does)."""
    first: ResponseError | None = None
    for i in range(count):
        try:
            conn.read_response()
        except ResponseError as err:
            if first is None:
                first = ResponseError(f"command {i + 1} of {count}: {err}")
    if first is not None:
        raise first
