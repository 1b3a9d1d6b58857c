"""The serving-path feature lookup: Feast's online store interface (``online_read``), prepared once.

The Feast SDK's ``get_online_features`` re-resolves the feature service, validates and converts on every
call; serving prepares that once (views, join keys, entity-key makers) and per request only builds the
entity keys, reads each view through the online store and converts the values. Same data format, same
store interface, a fraction of the per-call work. Build a new lookup after ``feast apply`` changes views.

A view's TTL holds here as in the training set's point-in-time join (Feast keeps a feature row while
``feature_ts >= as_of - ttl``, with ``as_of = t - 1 µs``): a stored row older than that at request time is
missing, like an entity that is not in the store. The SDK's ``get_online_features`` ignores TTLs; the row's
event timestamp comes back from the same ``online_read``, so honouring them costs no extra round trip.

Values are read by the view's own (short) field names and handed back under the names the SDK gives with
the same ``full_feature_names`` flag: ``<view>__<feature>`` when it is set, so two views may share a name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from feast import FeatureService, FeatureStore, FeatureView, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import (
    PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE,
    feast_value_type_to_python_type,
    python_values_to_proto_values,
)

from kfloop.config.features import AS_OF_OFFSET, FULL_NAME_SEPARATOR

_SCALAR_KINDS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val", "bytes_val"})


def _to_python(proto: ValueProto) -> Any:
    kind = proto.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALAR_KINDS:
        return getattr(proto, kind)
    return feast_value_type_to_python_type(proto)


def _entity_value_maker(value_type: ValueType) -> Callable[[Any], ValueProto]:
    """Python entity value → ValueProto, as Feast's type map converts a scalar of ``value_type``."""
    if value_type in PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE:
        field, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[value_type]
        return lambda value: ValueProto(**{field: convert(value)})
    return lambda value: python_values_to_proto_values([value], value_type)[0]


def _converts(make: Callable[[Any], ValueProto], value: Any) -> bool:
    try:
        make(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _absent(row: Mapping[str, ValueProto] | None) -> bool:
    """No row for the entity: SQLite answers None, Redis a row of empty values."""
    return row is None or not any(v.WhichOneof("val") for v in row.values())


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _ViewRead:
    view: FeatureView
    join_key: str
    features: tuple[str, ...]  # the view's field names, as the store keys them
    max_age: timedelta | None  # ttl + AS_OF_OFFSET; None: the view never expires (Feast's ttl 0 / unset)
    outputs: tuple[str, ...]  # the names handed back, one per feature

    def cutoff(self, now: datetime) -> datetime | None:
        """Rows with an event timestamp before this are expired at ``now``."""
        return None if self.max_age is None else now - self.max_age


def _missing(row: tuple[datetime | None, Mapping[str, ValueProto] | None], cutoff: datetime | None) -> bool:
    """Absent, or stored with an event time older than the view's TTL allows."""
    ts, values = row
    return _absent(values) or (cutoff is not None and (ts is None or ts < cutoff))


class ServingLookup:
    """Online features of one request, through the online store's own ``online_read``.

    Everything that does not depend on the request is resolved once: the service's views, each
    view's join key, the entity value → ``ValueProto`` conversion (Feast's scalar type map) and the
    feature names. Per request: one ``EntityKeyProto`` per join key, one ``provider.online_read`` per
    view (Feast's store interface and data format), values converted as Feast's type map does.
    Unknown entities, and rows older than their view's TTL at ``clock()`` (the request time: the wall
    clock, or a pinned time to replay history), give ``None`` values. ``full_feature_names`` names them
    ``<view>__<feature>``, as the SDK does. Rebuild it after ``feast apply`` changes the service.
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str | FeatureService,
        *,
        clock: Callable[[], datetime] = _wall_clock,
        full_feature_names: bool = False,
    ) -> None:
        svc = store.get_feature_service(service) if isinstance(service, str) else service
        entities = {e.name: e for e in store.list_entities()}
        reads, makers = [], {}
        for projection in svc.feature_view_projections:
            view = store.get_feature_view(projection.name)
            if len(view.entities) != 1:
                raise ValueError(f"feature view {view.name} has {len(view.entities)} entities, expected 1")
            entity = entities[view.entities[0]]
            makers[entity.join_key] = _entity_value_maker(entity.value_type)
            max_age = view.ttl + AS_OF_OFFSET if view.ttl else None  # a zero ttl never expires, as in Feast
            features = tuple(f.name for f in projection.features)
            prefix = f"{projection.name_to_use()}{FULL_NAME_SEPARATOR}" if full_feature_names else ""
            reads.append(_ViewRead(view, entity.join_key, features, max_age, tuple(prefix + f for f in features)))
        self._config = store.config
        self._provider = store._get_provider()
        self._reads = tuple(reads)
        self._makers = makers
        self._clock = clock
        self.join_keys = tuple(makers)
        self.feature_names = tuple(name for r in reads for name in r.outputs)

    def entity_keys(self, entity_row: Mapping[str, Any]) -> dict[str, EntityKeyProto]:
        """Join key → the request's ``EntityKeyProto`` (raises KeyError for a missing join key)."""
        makers = self._makers
        return {jk: EntityKeyProto(join_keys=[jk], entity_values=[make(entity_row[jk])]) for jk, make in makers.items()}

    def get(self, entity_row: Mapping[str, Any]) -> dict[str, Any]:
        """Feature name → Python value (None when missing or expired) for one entity row (join key → value)."""
        keys = self.entity_keys(entity_row)
        now = self._clock()
        out: dict[str, Any] = {}
        for r in self._reads:
            # a fresh list: the Redis store appends its timestamp field to requested_features
            ((ts, row),) = self._provider.online_read(self._config, r.view, [keys[r.join_key]], list(r.features))
            if _missing((ts, row), r.cutoff(now)):
                out.update(dict.fromkeys(r.outputs))
                continue
            for name, output in zip(r.features, r.outputs, strict=True):
                proto = row.get(name)
                out[output] = None if proto is None else _to_python(proto)
        return out

    def key_protos(self, keys: Mapping[str, Sequence[Any]]) -> dict[str, list[EntityKeyProto]]:
        """Join key → one ``EntityKeyProto`` per row. A value the key's type cannot hold (the caller's input,
        not the store's fault) raises ``ValueError`` naming the key and row."""
        protos = {}
        for jk, make in self._makers.items():
            try:
                protos[jk] = [EntityKeyProto(join_keys=[jk], entity_values=[make(v)]) for v in keys[jk]]
            except (TypeError, ValueError, OverflowError) as err:
                row = next(i for i, v in enumerate(keys[jk]) if not _converts(make, v))
                raise ValueError(f"{jk}[{row}]: {keys[jk][row]!r} is not a valid {jk} ({err})") from err
        return protos

    def views_of(self, join_key: str) -> list[str]:
        """The feature views looked up by ``join_key`` (what a miss of that key is missing from)."""
        return [r.view.name for r in self._reads if r.join_key == join_key]

    def get_batch(self, keys: Mapping[str, Sequence[Any]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
        """Many rows in one ``online_read`` per view: ({feature: values per row}, {join key: bool [n] —
        the entity had no row, or only an expired one, in some view of that key}). Only join keys with a
        miss appear in the second; a missed view's values are None."""
        return self.read_batch(self.key_protos(keys))

    def read_batch(self, protos: Mapping[str, list[EntityKeyProto]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
        """``get_batch`` over keys already converted by ``key_protos`` (the part that reads the store)."""
        n = len(next(iter(protos.values()))) if protos else 0
        now = self._clock()
        out: dict[str, list] = {}
        missing: dict[str, np.ndarray] = {}
        for r in self._reads:
            rows = self._provider.online_read(self._config, r.view, protos[r.join_key], list(r.features))
            cutoff = r.cutoff(now)
            absent = np.fromiter((_missing(row, cutoff) for row in rows), dtype=bool, count=n)
            if absent.any():
                missing[r.join_key] = missing.get(r.join_key, np.zeros(n, dtype=bool)) | absent
                rows = [(None, None) if gone else row for row, gone in zip(rows, absent.tolist(), strict=True)]
            for name, to in zip(r.features, r.outputs, strict=True):
                out[to] = [None if row is None or row.get(name) is None else _to_python(row[name]) for _, row in rows]
        return out, missing
