"""Delete entities of one feature view from the online store, in Feast's own storage layout.

Why: when every clean row of an entity disappears (quarantined by a new contract, say), a fresh build
would not serve that entity at all, so materialization must remove it. Feast 0.67's online store
interface deletes only whole tables (``update(tables_to_delete=…)``) or every key of an entity type
(Redis ``delete_entity_values``), never one entity. This module removes exactly the view's values of the
given entities, addressing them as Feast's SQLite and Redis stores write them (same table id, entity-key
serialization, Redis hash fields), through the store's own connection. The materialize tests check that an
online read afterwards equals a fresh build on both stores.
"""

from __future__ import annotations

from collections.abc import Sequence

from feast import FeatureStore, FeatureView, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_table_id, compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values

from kfloop.errors import StorageError

__all__ = ["delete_online"]


def _keys(join_key: str, values: Sequence[object], value_type: ValueType) -> list[EntityKeyProto]:
    protos = python_values_to_proto_values(list(values), value_type)
    return [EntityKeyProto(join_keys=[join_key], entity_values=[p]) for p in protos]


def delete_online(store: FeatureStore, view: FeatureView, join_key: str, values: Sequence[object]) -> int:
    """Remove ``view``'s online values of the entities ``values`` (other views' values stay); returns how
    many entities were asked for. Entities not in the store are no error."""
    if not values:
        return 0
    config = store.config
    value_type = next(e.value_type for e in store.list_entities() if e.join_key == join_key)
    keys = _keys(join_key, values, value_type)
    online = store._get_provider().online_store
    versioned = config.registry.enable_online_feature_view_versioning
    kind = config.online_store.type
    if kind == "sqlite":
        table = compute_table_id(config.project, view, versioned).replace('"', '""')
        version = config.entity_key_serialization_version
        rows = [(serialize_entity_key(k, entity_key_serialization_version=version),) for k in keys]
        conn = online._get_conn(config)
        with conn:
            conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', rows)
    elif kind == "redis":
        name = compute_versioned_name(view, versioned)
        fields = [_mmh3(f"{name}:{f.name}") for f in view.features] + [f"_ts:{name}".encode()]
        client = online._get_client(config.online_store)
        version = config.entity_key_serialization_version
        with client.pipeline(transaction=False) as pipe:
            for key in keys:  # an entity's hash holds every view of it: drop this view's fields only
                pipe.hdel(_redis_key(config.project, key, entity_key_serialization_version=version), *fields)
            pipe.execute()
    else:
        raise StorageError(f"online store ({kind}): deleting entities is not supported")
    return len(keys)
