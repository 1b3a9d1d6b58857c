"""The serving-path feature lookup: Feast's online stores, prepared once, every view of a request in one read.

The Feast SDK's ``get_online_features`` re-resolves the feature service, validates and converts on every
call, and reads one view per store round trip. Serving prepares that once (views, join keys, entity-key
encoders, feature names, the store's prepared multi-view read) and per request only encodes the entity keys,
reads all views at once (Feast's own SQLite / Redis store class, one statement or one pipeline: see
``online_stores.py``) and converts the values (``online_values.py``). Same data, same store classes, a
fraction of the per-call work. Build a new lookup after ``feast apply`` changes views.

A view's TTL holds here as in the training set's point-in-time join (Feast keeps a feature row while
``feature_ts >= as_of - ttl``, with ``as_of = t - 1 µs``): a stored row older than that at request time is
missing, like an entity that is not in the store. The SDK's ``get_online_features`` ignores TTLs; the row's
event timestamp comes back from the same read, so honouring them costs no extra round trip.

Values are read by the view's own (short) field names and handed back under the names the SDK gives with
the same ``full_feature_names`` flag: ``<view>__<feature>`` when it is set, so two views may share a name.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from feast import FeatureService, FeatureStore, FeatureView, ValueType
from feast.infra.key_encoding_utils import _serialize_val, serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.type_map import (
    PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE,
    python_values_to_proto_values,
)

from kfloop.config.features import AS_OF_OFFSET, FULL_NAME_SEPARATOR
from kfloop.feature_repo.online_stores import StoredRow, ViewFeatures, batch_store
from kfloop.feature_repo.online_values import to_python


def _entity_value_maker(value_type: ValueType) -> Callable[[Any], ValueProto]:
    """Python entity value → ValueProto, as Feast's type map converts a scalar of ``value_type``."""
    if value_type in PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE:
        field, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[value_type]
        return lambda value: ValueProto(**{field: convert(value)})
    return lambda value: python_values_to_proto_values([value], value_type)[0]


#: Join-key types whose stored value part is packed straight from Feast's scalar conversion (``_serialize_val``'s
#: formats); any other type goes through a ``ValueProto``.
_PACKERS: dict[ValueType, tuple[int, Callable[[Any], bytes]]] = {
    ValueType.STRING: (ValueTypeProto.STRING, lambda v: v.encode("utf8")),
    ValueType.INT64: (ValueTypeProto.INT64, struct.Struct("<q").pack),
    ValueType.INT32: (ValueTypeProto.INT32, struct.Struct("<i").pack),
}


def _key_encoder(join_key: str, value_type: ValueType, version: int) -> Callable[[Any], bytes]:
    """Python entity value → the stored key: ``serialize_entity_key`` of its one-key ``EntityKey``. For version 3
    the constant head (key count, the join key) is built once; the value is converted by Feast's type map and
    packed as ``_serialize_val`` packs it (an integer out of range is a ValueError, as the proto's)."""
    make = _entity_value_maker(value_type)
    if version < 3:
        return lambda value: serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[make(value)]), version
        )
    name = join_key.encode("utf8")
    head = struct.pack("<III", 1, ValueTypeProto.STRING, len(name)) + name
    sizes = struct.Struct("<II").pack
    if value_type in _PACKERS:
        kind, pack = _PACKERS[value_type]
        _, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[value_type]

        def packed(value: Any) -> bytes:
            try:
                payload = pack(convert(value))
            except struct.error as err:
                raise ValueError(f"{value!r} is out of range for {value_type.name}") from err
            return head + sizes(kind, len(payload)) + payload

        return packed

    def encode(value: Any) -> bytes:
        proto = make(value)
        payload, kind = _serialize_val(proto.WhichOneof("val"), proto, version)
        return head + sizes(kind, len(payload)) + payload

    return encode


def _encodes(encode: Callable[[Any], bytes], value: Any) -> bool:
    try:
        encode(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _ViewRead:
    view: FeatureView
    join_key: str
    features: tuple[str, ...]  # the view's field names, as the store keys them
    max_age: timedelta | None  # ttl + AS_OF_OFFSET; None: the view never expires (Feast's ttl 0 / unset)
    outputs: tuple[str, ...]  # the names handed back, one per feature

    @functools.cached_property
    def unknown(self) -> dict[str, None]:
        """What a missing or expired row gives: None for every output."""
        return dict.fromkeys(self.outputs)

    def cutoff(self, now: datetime) -> datetime | None:
        """Rows with an event timestamp before this are expired at ``now``."""
        return None if self.max_age is None else now - self.max_age


def _missing(row: StoredRow, cutoff: datetime | None) -> bool:
    """Absent, or stored with an event time older than the view's TTL allows."""
    return row is None or (cutoff is not None and (row[0] is None or row[0] < cutoff))


class ServingLookup:
    """Online features of one request, through the online store's multi-view read (``prepare_many``).

    Everything that does not depend on the request is resolved once: the service's views, each view's join
    key, the entity value → stored key encoding (Feast's scalar type map and key format) and the feature
    names. Per request: one stored key per join key, one read of every view (one SQLite statement / one Redis
    pipeline, Feast's store class and data format), values converted as Feast's type map does. Unknown
    entities, and rows older than their view's TTL at ``clock()`` (the request time: the wall clock, or a
    pinned time to replay history), give ``None`` values. ``full_feature_names`` names them
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
        version = store.config.entity_key_serialization_version
        reads, encoders = [], {}
        for projection in svc.feature_view_projections:
            view = store.get_feature_view(projection.name)
            if len(view.entities) != 1:
                raise ValueError(f"feature view {view.name} has {len(view.entities)} entities, expected 1")
            entity = entities[view.entities[0]]
            encoders[entity.join_key] = _key_encoder(entity.join_key, entity.value_type, version)
            max_age = view.ttl + AS_OF_OFFSET if view.ttl else None  # a zero ttl never expires, as in Feast
            features = tuple(f.name for f in projection.features)
            prefix = f"{projection.name_to_use()}{FULL_NAME_SEPARATOR}" if full_feature_names else ""
            reads.append(_ViewRead(view, entity.join_key, features, max_age, tuple(prefix + f for f in features)))
        online = batch_store(store._get_provider().online_store)
        self._read = online.prepare_many(store.config, [ViewFeatures(r.view, r.features) for r in reads])
        self._reads = tuple(reads)
        self._encoders = encoders
        self._clock = clock
        self.join_keys = tuple(encoders)
        self.feature_names = tuple(name for r in reads for name in r.outputs)

    def get(self, entity_row: Mapping[str, Any]) -> dict[str, Any]:
        """Feature name → Python value (None when missing or expired) for one entity row (join key → value);
        a KeyError for a missing join key."""
        keys = {jk: (encode(entity_row[jk]),) for jk, encode in self._encoders.items()}
        now = self._clock()
        got = self._read.read([keys[r.join_key] for r in self._reads])
        out: dict[str, Any] = {}
        for r, (row,) in zip(self._reads, got, strict=True):
            if _missing(row, r.cutoff(now)):
                out.update(r.unknown)
            else:
                out.update(zip(r.outputs, to_python(row[1]), strict=True))  # type: ignore[index]
        return out

    def key_protos(self, keys: Mapping[str, Sequence[Any]]) -> dict[str, list[bytes]]:
        """Join key → one stored key per row (Feast's serialized ``EntityKey``). A value the key's type cannot
        hold (the caller's input, not the store's fault) raises ``ValueError`` naming the key and row."""
        protos = {}
        for jk, encode in self._encoders.items():
            try:
                protos[jk] = [encode(v) for v in keys[jk]]
            except (TypeError, ValueError, OverflowError) as err:
                row = next(i for i, v in enumerate(keys[jk]) if not _encodes(encode, v))
                raise ValueError(f"{jk}[{row}]: {keys[jk][row]!r} is not a valid {jk} ({err})") from err
        return protos

    def views_of(self, join_key: str) -> list[str]:
        """The feature views looked up by ``join_key`` (what a miss of that key is missing from)."""
        return [r.view.name for r in self._reads if r.join_key == join_key]

    def get_batch(self, keys: Mapping[str, Sequence[Any]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
        """Many rows in one read of every view: ({feature: values per row}, {join key: bool [n] — the entity
        had no row, or only an expired one, in some view of that key}). Only join keys with a miss appear in
        the second; a missed view's values are None."""
        return self.read_batch(self.key_protos(keys))

    def read_batch(self, protos: Mapping[str, Sequence[bytes]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
        """``get_batch`` over keys already encoded by ``key_protos`` (the part that reads the store)."""
        n = len(next(iter(protos.values()))) if protos else 0
        now = self._clock()
        got = self._read.read([protos[r.join_key] for r in self._reads])
        out: dict[str, list] = {}
        missing: dict[str, np.ndarray] = {}
        for r, rows in zip(self._reads, got, strict=True):
            cutoff = r.cutoff(now)
            absent = np.fromiter((_missing(row, cutoff) for row in rows), dtype=bool, count=n)
            if absent.any():
                missing[r.join_key] = missing.get(r.join_key, np.zeros(n, dtype=bool)) | absent
            columns = [[None] * n for _ in r.features]
            for i, (row, gone) in enumerate(zip(rows, absent.tolist(), strict=True)):
                if not gone:
                    for column, value in zip(columns, to_python(row[1]), strict=True):  # type: ignore[index]
                        column[i] = value
            out.update(zip(r.outputs, columns, strict=True))
        return out, missing
