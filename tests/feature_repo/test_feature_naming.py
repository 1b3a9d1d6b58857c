"""``features.naming: full``: the same aggregate in two views, named ``<view>__<feature>`` as Feast's
``full_feature_names=True`` names it, carries each view's own values through the training set's
point-in-time join and the serving lookup, on SQLite and on Redis. The default (short) names stay as
they were, and a clash under them says how to fix it."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from kfloop.cli.summary import features_table
from kfloop.components.training_set import service_version
from kfloop.config import parse_config
from kfloop.errors import ConfigError
from kfloop.feature_repo.online import ServingLookup
from kfloop.training.preprocess import feature_columns
from tests.conftest import demo_config
from tests.feature_repo.harness import (
    CUSTOMERS,
    HAND_CUSTOMER,
    HAND_CUSTOMER_ROWS,
    HAND_ROWS,
    HAND_TIME,
    HAND_TRAINING,
    MERCHANTS,
    Loop,
    OnlineBackend,
    assert_values,
    view_section,
    write_csv,
)

SHARED = "amount_mean_24h"  # the demo's customer view has it; the edit below gives the merchant view it too
CUSTOMER_SHARED, MERCHANT_SHARED = f"{CUSTOMERS}__{SHARED}", f"{MERCHANTS}__{SHARED}"
#: The merchant's mean amount over 24 h as of each hand row (m-1: tx-1, tx-3, tx-4, tx-5, tx-7; m-2: tx-2, tx-6).
MERCHANT_MEAN_24H = {"tx-1": 10.0, "tx-3": 25.0, "tx-4": 80.0, "tx-5": 160.0, "tx-7": 83.5, "tx-2": 20.0, "tx-6": 12.5}


def shared_aggregate(naming: str | None = "full"):
    def edit(data: dict) -> None:
        if naming is not None:
            data["features"]["naming"] = naming
        aggregate = {"column": "amount", "functions": ["mean"], "windows": ["24h"]}
        view_section(data, MERCHANTS)["aggregates"].append(aggregate)

    return edit


def test_full_names_are_the_model_inputs_and_views_keep_short_fields(tmp_path: Path) -> None:
    data = demo_config(tmp_path).model_dump(mode="json")
    shared_aggregate()(data)
    config = parse_config(data, "test")
    names = config.features.feature_names()
    assert CUSTOMER_SHARED in names and MERCHANT_SHARED in names and len(set(names)) == len(names)
    assert all(n.startswith((f"{CUSTOMERS}__", f"{MERCHANTS}__")) for n in names)
    assert SHARED in next(v for v in config.features.views if v.name == MERCHANTS).feature_names()
    numeric, _ = feature_columns(config)
    assert numeric[: len(names)] == names


def test_short_names_stay_the_default_and_a_clash_says_how_to_fix_it(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    assert config.features.naming == "short" and SHARED in config.features.feature_names()
    data = config.model_dump(mode="json")
    shared_aggregate(naming=None)(data)
    with pytest.raises(ConfigError, match=rf"{SHARED} \(views {CUSTOMERS}, {MERCHANTS}\): set features.naming: full"):
        parse_config(data, "test")


def test_same_aggregate_in_two_views_joins_and_serves_each_views_values(
    tmp_path: Path, online_backend: OnlineBackend
) -> None:
    loop = Loop.create(tmp_path / "ws", online_backend, shared_aggregate())
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    loop.materialize()
    result = loop.training_set()
    assert result.features == loop.config.features.feature_names()
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(features_table([], [], loop.manifest(result)))  # the run summary names the inputs as trained
    inputs = f"{len(result.features)} stored features ({CUSTOMERS}__amount_count_1h, …)"
    text = console.export_text()
    assert "model inputs" in text and inputs in text
    rows = pd.concat(loop.splits(result).values(), ignore_index=True)
    assert CUSTOMER_SHARED in rows.columns and MERCHANT_SHARED in rows.columns and SHARED not in rows.columns
    by_key = {(r["customer_id"], r["event_timestamp"]): r for r in rows.to_dict("records")}
    customer_names = [n for n in loop.spec(CUSTOMERS).feature_names()]
    for tx, (customer_row, merchant_row) in HAND_TRAINING.items():
        row = by_key[(HAND_CUSTOMER[tx], HAND_TIME[tx])]
        own = {n: row[f"{CUSTOMERS}__{n}"] for n in customer_names}
        assert_values(own, HAND_CUSTOMER_ROWS.get(customer_row), customer_names, f"{tx} customer features")
        merchant = {SHARED: row[MERCHANT_SHARED]}
        want = None if merchant_row is None else {SHARED: MERCHANT_MEAN_24H[merchant_row]}
        assert_values(merchant, want, [SHARED], f"{tx} merchant {SHARED}")
    # tx-3: the customer's mean (tx-1, tx-2) and the merchant's (tx-1) differ, each in its own column
    tx3 = by_key[("c-1", HAND_TIME["tx-3"])]
    assert (tx3[CUSTOMER_SHARED], tx3[MERCHANT_SHARED]) == (15.0, 10.0)

    # serving, an hour after tx-8: the store holds each entity's newest row; c-2's and m-1's are tx-8, m-2's
    # tx-6; c-1's (tx-5) is past the customer view's 30d ttl
    when = HAND_TIME["tx-8"].to_pydatetime() + timedelta(hours=1)
    store = loop.store()
    lookup = ServingLookup(store, loop.config.features.service, clock=lambda: when, full_feature_names=True)
    assert list(lookup.feature_names) == loop.config.features.feature_names()
    requests = [{"customer_id": "c-2", "merchant_id": "m-2"}, {"customer_id": "c-1", "merchant_id": "m-1"}]
    expected = [(9.0, 12.5), (None, 9.0)]
    batch, missing = lookup.get_batch({k: [r[k] for r in requests] for k in lookup.join_keys})
    assert {k: v.tolist() for k, v in missing.items()} == {"customer_id": [False, True]}
    for i, (request, want) in enumerate(zip(requests, expected, strict=True)):
        got = lookup.get(request)
        assert (got[CUSTOMER_SHARED], got[MERCHANT_SHARED]) == want, request
        assert (batch[CUSTOMER_SHARED][i], batch[MERCHANT_SHARED][i]) == want, request
    # the names and values Feast's SDK gives with full_feature_names=True (it ignores ttls: the live row only)
    service = store.get_feature_service(loop.config.features.service)
    sdk = store.get_online_features(features=service, entity_rows=requests[:1], full_feature_names=True).to_dict()
    assert {n: sdk[n][0] for n in lookup.feature_names} == lookup.get(requests[0])


def test_full_names_are_another_feature_service_version(tmp_path: Path) -> None:
    """A champion trained under short names is then not scored on a split with full ones (evaluate stage)."""
    config = demo_config(tmp_path)
    data = config.model_dump(mode="json")
    data["features"]["naming"] = "full"
    assert service_version(parse_config(data, "test")) != service_version(config)
    data["features"]["naming"] = "short"
    assert service_version(parse_config(data, "test")) == service_version(config)  # as before naming existed
