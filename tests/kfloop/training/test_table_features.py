"""Stored categorical features: an attribute table's string column (a merchant's ``region``) and an int64 code
listed in ``features.categorical`` (its ``tier``) are categorical model inputs with a vocabulary fitted on the
training split, its float (``rating``) is numeric; both frameworks train on them, export, and score a category
the training split never had (or a merchant without a row) with the unknown index, as serving does.

The training set is the trainers' own scaffolding (demo rows joined point-in-time without Feast) with the
table's columns joined by key, as a snapshot table joins every event.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.train import training_set
from kfloop.config import ColumnType, Config, load_config, parse_config
from kfloop.training.preprocess import UNKNOWN, Preprocessor, feature_columns
from kfloop.training.trainer import export, load_exported, train

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "examples" / "fraud" / "kfloop.yaml"
TABLE = "merchants"
REGIONS = ("north", "south", "east", "west")
#: The table's columns: a string category, an int64 code declared categorical, a number.
MERCHANT_COLUMNS = {"merchant_id": "string", "region": "string", "tier": "int64", "rating": "float64"}


def add_merchants_table(data: dict, uri: str) -> None:
    """The fraud config (a plain dict) with a snapshot table of merchant attributes keyed by merchant_id."""
    data["features"]["tables"] = [
        {"name": TABLE, "key": "merchant_id", "source": {"uri": uri, "columns": dict(MERCHANT_COLUMNS)}}
    ]
    data["features"]["categorical"] = [*data["features"].get("categorical", ()), "tier"]


def merchants_frame(merchant_ids: list[str]) -> pd.DataFrame:
    """One row per merchant: region by index (so every region has merchants), tier 1-3 (null for every
    seventh), a rating; deterministic."""
    ids = sorted(set(merchant_ids))
    index = np.arange(len(ids))
    tier = pd.array([None if i % 7 == 6 else 1 + i % 3 for i in index], dtype="Int64")
    return pd.DataFrame(
        {
            "merchant_id": ids,
            "region": [REGIONS[i % len(REGIONS)] for i in index],
            "tier": tier,
            "rating": 1.0 + (index * 37 % 40) / 10.0,
        }
    )


def table_config(uri: str = "merchants.csv", **training: object) -> Config:
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    add_merchants_table(data, uri)
    data["training"].update(training)
    return parse_config(data, "test config")


def test_feature_columns_put_a_tables_categories_with_the_categories() -> None:
    plain = load_config(DEMO_CONFIG)
    config = table_config()
    numeric, categorical = feature_columns(config)
    old_numeric, old_categorical = feature_columns(plain)
    assert config.features.feature_types()["region"] is ColumnType.STRING
    # stored features then request features, in each kind; a config without tables is unchanged
    assert numeric == [*plain.features.feature_names(), "rating", "amount", "distance_from_home_km", "hour_of_day"]
    assert categorical == ["region", "tier", "channel", "merchant_category"]
    assert [c for c in numeric if c != "rating"] == old_numeric
    assert [c for c in categorical if c not in ("region", "tier")] == old_categorical
    assert old_categorical == ["channel", "merchant_category"]
    # without the categorical declaration, the int64 code is a number
    data = config.model_dump(mode="json")
    data["features"]["categorical"] = []
    numeric, categorical = feature_columns(parse_config(data, "test config"))
    assert "tier" in numeric and "tier" not in categorical and "region" in categorical


def _with_merchants(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    return frame.merge(table, on="merchant_id", how="left")


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    config = table_config()
    out = training_set(config, 6000, 2031)
    table = merchants_frame(out["merchant_id"].tolist())
    # a training set's parquet read back: strings stay strings, an int64 with nulls becomes floats (3.0)
    out = _with_merchants(out, table)
    out["tier"] = out["tier"].astype("float64")
    a, b = int(len(out) * 0.7), int(len(out) * 0.85)
    return tuple(part.reset_index(drop=True) for part in (out.iloc[:a], out.iloc[a:b], out.iloc[b:]))


FRAMEWORKS = ["pytorch", pytest.param("tensorflow", marks=pytest.mark.slow)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_string_stored_feature_gets_a_vocabulary_and_the_model_trains_and_scores(
    splits: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], framework: str, tmp_path: Path
) -> None:
    train_, val, test = splits
    config = table_config(framework=framework, epochs=3)
    model = train(config, train_, val)
    pre = model.preprocessor
    assert pre.categorical == ["region", "tier", "channel", "merchant_category"] and "rating" in pre.numeric
    assert pre.vocabularies["region"] == [UNKNOWN, *sorted(REGIONS)]
    assert pre.vocabularies["tier"] == [UNKNOWN, "1", "2", "3"]  # 3.0 and 3 are one category
    assert pre.cardinalities()[:2] == [5, 4]

    export(model, tmp_path / "model")
    predict = load_exported(tmp_path / "model")
    p = predict(test)
    assert p.shape == (len(test),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert np.allclose(p, model.predict(test), atol=1e-5)

    # the region is an input the model uses, an unseen region scores as a missing one (the unknown index)
    rows = test.iloc[:50].copy()
    other = rows.assign(region=np.where(rows["region"] == "north", "south", "north"))
    unseen, missing = rows.assign(region="atlantis"), rows.assign(region=None)
    assert not np.allclose(predict(rows), predict(other))
    assert np.allclose(predict(unseen), predict(missing))
    _, x_cat = pre.transform(unseen)
    assert (x_cat[:, 0] == 0).all()


def test_serving_columns_encode_a_stored_category_as_training_does(
    splits: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    """Serving hands the preprocessor the lookup's values as category text (``tier`` 2 as ``"2"``), the
    training set has them as read from Parquet (``2.0``): the same indices."""
    train_ = splits[0]
    numeric, categorical = feature_columns(table_config())
    pre = Preprocessor.fit(train_, numeric, categorical)
    rows = train_.iloc[:20]
    _, from_training = pre.transform(rows)
    columns = {c: rows[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in numeric}
    columns |= {c: rows[c].to_numpy(dtype=object) for c in categorical}
    columns["tier"] = np.array([None if pd.isna(v) else str(int(v)) for v in rows["tier"]], dtype=object)
    _, from_serving = pre.transform_columns(columns, len(rows))
    assert (from_training == from_serving).all()
    assert (from_serving[rows["tier"].isna().to_numpy(), 1] == 0).all()
