"""One read of every view (``online_read_many``) gives what Feast gives, on SQLite and on a real redis-server.

The serving lookup reads all views of a batch in one SQLite statement / one Redis pipeline, with its own entity
key encoding and value conversion. Its answer for many entities (known, unknown, repeated; fresh and past their
view's TTL) must be Feast's own: the SDK's ``get_online_features`` values (full feature names), except that a
view row whose event time, as Feast's per-view ``online_read`` returns it, is older than the TTL is None and
flagged missing. Two views share the customer entity, so Redis answers both from one hash read.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from kfloop.config.features import AS_OF_OFFSET
from kfloop.feature_repo.online import ServingLookup, _entity_value_maker, _key_encoder
from kfloop.feature_repo.online_stores import BatchSqliteOnlineStore, ViewKeys
from kfloop.feature_repo.online_values import to_python
from tests.feature_repo.harness import CUSTOMERS, Loop, OnlineBackend, demo_frames

RECENT = "customer_recent"  # a second view of the customer: its short TTL expires many of them


def _recent_view(data: dict) -> None:
    data["features"]["naming"] = "full"  # the two customer views may then share feature names
    data["features"]["views"].append(
        {
            "name": RECENT,
            "entity": "customer_id",
            "ttl": "3d",
            "aggregates": [{"column": "amount", "functions": ["max", "count"], "windows": ["24h", "7d"]}],
        }
    )


def _requests(frame: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    """n known (customer, merchant) pairs, some twice, then unknown customers and merchants."""
    pairs = frame[["customer_id", "merchant_id"]].drop_duplicates().sample(n, random_state=3)
    rows = [{"customer_id": c, "merchant_id": m} for c, m in pairs.itertuples(index=False)]
    rows += rows[:5]
    rows += [
        {"customer_id": "c-unknown", "merchant_id": rows[0]["merchant_id"]},
        {"customer_id": rows[1]["customer_id"], "merchant_id": "m-unknown"},
        {"customer_id": "c-unknown-2", "merchant_id": "m-unknown-2"},
    ]
    return rows


def _expected(
    store: FeatureStore, service_name: str, lookup: ServingLookup, rows: list[dict], when: datetime
) -> tuple[dict, dict]:
    """The SDK's values with full names, None where Feast's own ``online_read`` gives a row older than its TTL."""
    service = store.get_feature_service(service_name)
    sdk = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).to_dict()
    provider, types = store._get_provider(), {e.join_key: e.value_type for e in store.list_entities()}
    make = {jk: _entity_value_maker(t) for jk, t in types.items()}
    values = {name: list(sdk[name]) for name in lookup.feature_names}
    missing: dict[str, np.ndarray] = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        jk = next(e.join_key for e in store.list_entities() if e.name == view.entities[0])
        keys = [EntityKeyProto(join_keys=[jk], entity_values=[make[jk](r[jk])]) for r in rows]
        read = provider.online_read(store.config, view, keys, [f.name for f in projection.features])
        cutoff = when - view.ttl - AS_OF_OFFSET if view.ttl else None  # a zero ttl never expires
        gone = np.array(
            [
                d is None or not any(v.WhichOneof("val") for v in d.values()) or (cutoff is not None and t < cutoff)
                for t, d in read
            ]
        )
        for i in np.flatnonzero(gone):
            for f in projection.features:
                values[f"{view.name}__{f.name}"][i] = None
        if gone.any():
            missing[jk] = missing.get(jk, np.zeros(len(rows), dtype=bool)) | gone
    return values, missing


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b and type(a) is type(b)


def test_a_read_of_every_view_is_feasts_answer_for_many_entities(tmp_path: Path, online_backend: OnlineBackend) -> None:
    loop = Loop.create(tmp_path / "ws", online_backend, _recent_view)
    early, late = demo_frames()
    frame = pd.concat([early, late], ignore_index=True)
    loop.load(frame)
    loop.materialize()
    store = loop.store()
    when = frame["event_timestamp"].max().to_pydatetime() + timedelta(days=1)
    service = loop.config.features.service
    lookup = ServingLookup(store, service, clock=lambda: when, full_feature_names=True)
    rows = _requests(frame, 120)
    want, want_missing = _expected(store, service, lookup, rows, when)

    got, missing = lookup.get_batch({k: [r[k] for r in rows] for k in lookup.join_keys})
    assert set(got) == set(want) == set(lookup.feature_names)
    for name in lookup.feature_names:
        for i, (g, w) in enumerate(zip(got[name], want[name], strict=True)):
            assert _same(g, w), (name, rows[i], g, w)
    assert {k: v.tolist() for k, v in missing.items()} == {k: v.tolist() for k, v in want_missing.items()}
    for i in (0, 1, len(rows) - 3, len(rows) - 2, len(rows) - 1):  # the one-row path agrees
        assert all(_same(v, got[k][i]) for k, v in lookup.get(rows[i]).items()), rows[i]

    assert lookup.get_batch({k: [] for k in lookup.join_keys}) == ({name: [] for name in lookup.feature_names}, {})
    # the test means something: fresh and expired rows of the short-TTL view, unknown entities of both keys
    recent = [want[f"{RECENT}__amount_count_24h"][i] is not None for i in range(len(rows))]
    assert 10 < sum(recent) < len(rows) - 10, sum(recent)
    assert want_missing["merchant_id"][-2] and want[f"{CUSTOMERS}__amount_sum_7d"][-3] is None

    if online_backend.name == "sqlite":  # many statements when the keys exceed SQLite's parameter limit
        keys = lookup.key_protos({k: [r[k] for r in rows] for k in lookup.join_keys})["customer_id"]
        views = [
            ViewKeys(store.get_feature_view(v), ("amount_count_7d", "amount_count_24h"), keys)
            for v in (CUSTOMERS, RECENT)
        ]
        one, small = BatchSqliteOnlineStore(), BatchSqliteOnlineStore()
        small._get_conn(store.config).setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 7)
        assert small.online_read_many(store.config, views) == one.online_read_many(store.config, views)


@pytest.mark.parametrize(
    ("value_type", "values"),
    [
        (ValueType.STRING, ["c-1", "", "ünï ©ode", 42, np.str_("np")]),
        (ValueType.INT64, [0, -1, 2**63 - 1, -(2**63), np.int64(7), np.int32(-3), True, "12", 3.9]),
        (ValueType.INT32, [0, -(2**31), 2**31 - 1, np.int16(5), "-8"]),
        (ValueType.INT64, [2**63, "x", None, float("nan")]),
        (ValueType.INT32, [2**31, "1.5"]),
    ],
)
def test_entity_keys_are_feasts_serialized_keys(value_type: ValueType, values: list[Any]) -> None:
    """The lookup's encoder gives ``serialize_entity_key``'s bytes, and fails (ValueError/TypeError) where
    Feast's type map fails."""
    encode, make = _key_encoder("k", value_type, 3), _entity_value_maker(value_type)
    for value in values:
        try:
            want: bytes | type[Exception] = serialize_entity_key(
                EntityKeyProto(join_keys=["k"], entity_values=[make(value)]), 3
            )
        except (TypeError, ValueError) as err:
            want = type(err)
        if isinstance(want, bytes):
            assert encode(value) == want, value
        else:
            with pytest.raises((TypeError, ValueError)):
                encode(value)


def _values() -> list[ValueProto]:
    """Scalars at the edges of each fast rule, and kinds and encodings it leaves to the proto."""
    ints = [0, 1, 127, 128, 300, 2**31 - 1, -(2**31), -1, 2**63 - 1, -(2**63)]
    out = [ValueProto(int64_val=i) for i in ints] + [ValueProto(int32_val=i) for i in ints if abs(i) <= 2**31 - 1]
    out += [ValueProto(double_val=x) for x in (0.0, -0.0, 1.5, 1e308, float("inf"), float("nan"))]
    out += [ValueProto(float_val=x) for x in (0.0, 0.1, -3.25e38, float("nan"))]
    out += [ValueProto(bool_val=b) for b in (True, False)]
    out += [ValueProto(string_val=s) for s in ("", "grocery", "ü" * 63, "a" * 127, "a" * 128, "x" * 1000)]
    out += [ValueProto(bytes_val=b) for b in (b"", b"\x00\xff", b"b" * 200)]
    out += [ValueProto(unix_timestamp_val=1_767_225_600), ValueProto(null_val=0), ValueProto()]
    out += [ValueProto(double_list_val={"val": [1.0, 2.0]}), ValueProto(string_list_val={"val": ["a"]})]
    return out


def test_stored_values_convert_as_feasts_type_map() -> None:
    protos = _values()
    blobs: list[bytes | None] = [v.SerializeToString() for v in protos]
    # two fields in one message (the last one wins in protobuf) and a missing value
    blobs += [ValueProto(double_val=2.5).SerializeToString() + ValueProto(int64_val=7).SerializeToString(), None]
    want = [None if not b else feast_value_type_to_python_type(ValueProto.FromString(b)) for b in blobs]
    got = to_python(blobs)
    assert len(got) == len(want)
    for blob, g, w in zip(blobs, got, want, strict=True):
        assert _same(g, w), (blob, g, w)
    assert got[-2] == 7
