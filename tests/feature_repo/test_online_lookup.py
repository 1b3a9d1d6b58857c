"""The serving-path lookup returns exactly what Feast's SDK returns, on SQLite and on Redis."""

from __future__ import annotations

import math
from pathlib import Path

from kfloop.feature_repo.online import ServingLookup
from tests.feature_repo.harness import Loop, OnlineBackend


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_lookup_equals_the_sdk_for_known_and_unknown_entities(tmp_path: Path, online_backend: OnlineBackend) -> None:
    loop = Loop.create(tmp_path / "ws", online_backend)
    frame = loop.load_demo()
    loop.materialize()
    store = loop.store()
    # asked as of the newest event, when every stored row is within its ttl: the SDK ignores ttls (see
    # test_online_ttl.py for what serving does with an expired row)
    newest = frame["event_timestamp"].max().to_pydatetime()
    lookup = ServingLookup(store, loop.config.features.service, clock=lambda: newest)
    assert set(lookup.feature_names) == set(loop.config.features.feature_names())
    rows = [
        {"customer_id": c, "merchant_id": m}
        for c, m in frame[["customer_id", "merchant_id"]].drop_duplicates().head(25).itertuples(index=False)
    ]
    rows.append({"customer_id": "c-unknown", "merchant_id": "m-unknown"})
    sdk = loop.online(rows, store)
    for i, row in enumerate(rows):
        got = lookup.get(row)
        for name in lookup.feature_names:
            assert _same(got[name], sdk[name][i]), (row, name, got[name], sdk[name][i])
    assert all(v is None for v in lookup.get(rows[-1]).values())
