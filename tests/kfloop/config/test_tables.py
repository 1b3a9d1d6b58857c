"""features.tables in the config: what a table becomes for ingest and validate, and what is refused at load."""

from __future__ import annotations

import pytest
import yaml

from kfloop.config import parse_config
from kfloop.config.tables import VALID_FROM
from kfloop.errors import ConfigError
from tests.conftest import DEMO_CONFIG


def with_table(**table: object) -> dict:
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    spec = {
        "name": "merchants",
        "key": "merchant_id",
        "source": {"uri": "m.csv", "columns": {"merchant_id": "string", "region": "string", "rating": "float64"}},
    }
    data["features"]["tables"] = [spec | table]
    return data


def test_a_snapshot_table_is_a_source_of_its_own_with_valid_from_and_upserts_by_key() -> None:
    config = parse_config(with_table())
    assert config.features.feature_names()[-2:] == ["region", "rating"]
    table = config.table_config("merchants")
    assert table.source.dataset == "merchants" and table.source.entity_keys == ("merchant_id",)
    assert table.source.timestamp_column == VALID_FROM
    assert table.contract.duplicates.keys == ("merchant_id",)
    assert table.contract.duplicates.mode == "keep_last_ingested"
    assert table.features.views == () and table.source.label_column is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"key": "channel", "source": {"uri": "m.csv", "columns": {"channel": "string", "region": "string"}}},
            "key 'channel' is not one of source.entity_keys",
        ),
        ({"name": "transactions"}, "uses the workspace names of source.dataset"),
        ({"name": "merchant_risk"}, "merchant_risk used twice"),
        (
            {"source": {"uri": "m.csv", "columns": {"merchant_id": "string", "is_fraud": "int64"}}},
            "is_fraud (the label); rename the table's column or set features.naming: full",
        ),
        (
            {"source": {"uri": "m.csv", "columns": {"merchant_id": "string", "customer_id": "string"}}},
            "customer_id (an entity key)",
        ),
        (
            {"source": {"uri": "m.csv", "columns": {"merchant_id": "int64", "region": "string"}}},
            "is int64 in the table but string in source.columns",
        ),
        ({"features": ["nope"]}, "features: 'nope' is not declared"),
        ({"contract": {"columns": {"region": {"min": 1}}}}, "contract.columns.region.min needs a numeric column"),
    ],
)
def test_a_table_that_cannot_work_is_refused_at_load_naming_it(edit: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="features") as info:
        parse_config(with_table(**edit))
    assert message in str(info.value)
