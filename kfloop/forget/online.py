"""Erasure in the online stores: Feast's rows of one entity, and the stream worker's histories of it.

Feast 0.67 deletes only whole tables or (Redis) every key of an entity type, never one entity. So the entity's
key is built as Feast builds it (``serialize_entity_key`` of the installed Feast, the store's serialization
version, ``_redis_key``) and exactly those rows (SQLite: one row per feature in each view's table) or that key
(Redis: one hash per entity, holding every view of its join key) are deleted through the store's own connection.
"""

from __future__ import annotations

from collections.abc import Mapping

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key, compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values

from kfloop.config import Config
from kfloop.errors import StorageError
from kfloop.forget.stores import Touched
from kfloop.forget.target import Target
from kfloop.storage import Storage


def _views(config: Config, key: str) -> list[str]:
    from kfloop.feature_repo.definitions import view_keys

    return [view for view, join_key in view_keys(config).items() if join_key == key]


def erase_online(
    config: Config, storage: Storage, target: Target, environ: Mapping[str, str], dry_run: bool
) -> Touched:
    """Delete the entity's online values in every view keyed by its column (nothing else)."""
    from kfloop.feature_repo.store import objects_for, open_store

    views = _views(config, target.key)
    kind = config.features.online_store.type
    out = Touched("online", kind)
    if not views:
        return out
    store = open_store(config, storage, environ)
    objects = objects_for(config, storage)
    value_type = next(e.value_type for e in objects.entities if e.join_key == target.key)
    (proto,) = python_values_to_proto_values([target.value], value_type)
    entity = EntityKeyProto(join_keys=[target.key], entity_values=[proto])
    repo = store.config
    version = repo.entity_key_serialization_version
    online = store._get_provider().online_store
    if kind == "sqlite":
        versioned = repo.registry.enable_online_feature_view_versioning
        conn = online._get_conn(repo)
        key = serialize_entity_key(entity, entity_key_serialization_version=version)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        with conn:
            for view in views:
                table = compute_table_id(repo.project, objects.view(view), versioned)
                if table not in tables:
                    continue
                quoted = table.replace('"', '""')
                if dry_run:
                    (n,) = conn.execute(f'SELECT COUNT(*) FROM "{quoted}" WHERE entity_key = ?', (key,)).fetchone()
                else:
                    n = conn.execute(f'DELETE FROM "{quoted}" WHERE entity_key = ?', (key,)).rowcount
                out.rows_removed += n
                out.keys_deleted += n
    elif kind == "redis":
        client = online._get_client(repo.online_store)
        key = _redis_key(repo.project, entity, entity_key_serialization_version=version)
        out.keys_deleted = int(client.exists(key) if dry_run else client.delete(key))
    else:
        raise StorageError(f"online store ({kind}): erasing one entity is not supported")
    return out


def erase_stream_state(config: Config, target: Target, environ: Mapping[str, str], dry_run: bool) -> Touched:
    """The stream worker's history and version keys of the entity in every view keyed by its column."""
    import orjson

    from kfloop.stream.sources import redis_client
    from kfloop.stream.state import history_key

    out = Touched("stream_state", "redis")
    if config.stream is None:
        return out
    field = orjson.dumps(target.value).decode()
    keys = []
    for view in _views(config, target.key):
        history = history_key(config.project, view, field)
        keys += [history, history + ":v"]
    if not keys:
        return out
    client = redis_client(config, environ)
    try:
        out.keys_deleted = int(client.exists(*keys) if dry_run else client.delete(*keys))
    finally:
        client.close()
    return out
