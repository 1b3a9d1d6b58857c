"""Source options at config load: derived columns are real, typed columns for every section after ingest."""

from __future__ import annotations

import pytest

from kfloop.config import config_from_json, config_to_json
from kfloop.errors import ConfigError
from tests.conftest import demo_config

DERIVED = {
    "columns": {
        "tx": "string",
        "customer_id": "string",
        "merchant_id": "string",
        "when": "string",
        "amount": "float64",
    },
    "derived": {
        "transaction_id": {"expression": "'tx-' + tx", "type": "string"},
        "event_timestamp": {"expression": "timestamp(when)", "type": "timestamp"},
        "merchant_category": {"expression": "if_else(amount > 100, 'retail', 'grocery')", "type": "string"},
        "channel": {"expression": "'pos'", "type": "string"},
        "distance_from_home_km": {"expression": "amount / 10", "type": "float64"},
        "hour_of_day": {"expression": "hour(event_timestamp)", "type": "int64"},
        "is_fraud": {"expression": "amount > 1000", "type": "int64"},
    },
    "timezone": "America/Chicago",
}


def test_derived_columns_serve_as_timestamp_label_contract_and_feature_columns() -> None:
    cfg = demo_config(**DERIVED)
    assert cfg.source.columns["event_timestamp"].value == "timestamp"
    assert cfg.source.label_column == "is_fraud" and "hour_of_day" in cfg.features.request_features
    assert config_from_json(config_to_json(cfg)) == cfg


def test_a_derived_column_has_its_declared_type_for_the_contract() -> None:
    derived = DERIVED["derived"] | {"transaction_id": {"expression": "amount * 2", "type": "float64"}}
    with pytest.raises(ConfigError, match=r"contract\.columns\.transaction_id\.regex needs a string column"):
        demo_config(**(DERIVED | {"derived": derived}))


def test_a_derived_column_may_only_use_earlier_ones() -> None:
    derived = {"hour_of_day": DERIVED["derived"]["hour_of_day"]} | DERIVED["derived"]
    with pytest.raises(
        ConfigError, match=r"source: derived\.hour_of_day\.expression: unknown column 'event_timestamp'"
    ):
        demo_config(**(DERIVED | {"derived": derived}))


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"source\.encoding: 'utf-9' is not a known text encoding"):
        demo_config(encoding="utf-9")
