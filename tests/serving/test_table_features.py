"""Stored categorical features served: an attribute table (``features.tables``) of merchants with a string
``region``, an int64 ``tier`` declared categorical and a float ``rating``, ingested, materialized and trained on;
a client sends the merchant key only and the response uses the table's attributes (over V1, V2 and gRPC, in
one process and with the transformer calling a separate predictor with BYTES tensors), the inference log keeps
the region as text, and a re-ingested attribute changes the served score.

The log schema and the log's encoder are also checked on their own (fast); the end-to-end tests are ``slow``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kfloop.components.features import compute_features
from kfloop.components.ingest import ingest
from kfloop.components.train import train_and_register
from kfloop.components.validate import validate
from kfloop.config import Config, parse_config
from kfloop.demo import DemoSpec, generate
from kfloop.layout import CARD_FILE
from kfloop.registry import ModelRegistry
from kfloop.serving.champion import input_mismatch
from kfloop.serving.client import ServingClient
from kfloop.serving.inference_log import InferenceLog, inference_log_schema, read_inference_log
from kfloop.serving.predictor import LoadedModel, load_model_dir
from kfloop.serving.server import open_lookup
from kfloop.serving.transformer import Transformer, _stored_categories
from kfloop.storage import LocalStorage
from kfloop.training.preprocess import UNKNOWN, Preprocessor, feature_columns
from kfloop.training.sets import latest_training_set, load_split
from tests.conftest import demo_config
from tests.feature_repo.harness import NOW, Loop, sqlite_backend
from tests.kfloop.training.test_table_features import REGIONS, TABLE, add_merchants_table, merchants_frame
from tests.serving.conftest import Trained, relaxed
from tests.serving.test_components import Component, components  # noqa: F401 (a fixture over `trained`)

CATEGORIES = ["region", "tier"]


def table_config(workspace: Path, edit: dict | None = None) -> Config:
    data = demo_config(workspace).model_dump(mode="json")
    add_merchants_table(data, str(workspace / "merchants.csv"))
    for col, kind in (edit or {}).items():
        data["features"]["tables"][0]["source"]["columns"][col] = kind
    return parse_config(data, "test config")


# --- the log's columns (fast) ---------------------------------------------------------------------------------------


def test_the_log_schema_types_a_tables_features(tmp_path: Path) -> None:
    config = table_config(tmp_path, {"verified": "bool"})
    schema = inference_log_schema(config)
    stored = config.features.feature_names()
    assert stored[-4:] == ["region", "tier", "rating", "verified"]
    assert schema.names[-8:-4] == stored[-4:]  # stored features last among the inputs, tables after the views
    assert schema.field("region").type == pa.string()
    assert schema.field("tier").type == pa.int64()  # a categorical code keeps its type, as a request's does
    assert schema.field("rating").type == pa.float64()
    assert schema.field("verified").type == pa.bool_()
    assert all(schema.field(f).type == pa.float64() for f in stored[:-4])  # aggregates as before
    data = config.model_dump(mode="json")
    data["features"]["categorical"] = []
    assert inference_log_schema(parse_config(data, "test config")).field("tier").type == pa.float64()  # a number


def test_the_log_encodes_and_reads_back_a_string_stored_feature(tmp_path: Path) -> None:
    """What the transformer logs: a category as text (None when missing), an integer code as its text, a
    flag as the model's 0/1; written by the encoder process and read back typed."""
    config = table_config(tmp_path, {"verified": "bool"})
    storage = LocalStorage(tmp_path)
    n = 4
    row = {
        "customer_id": [f"c{i}" for i in range(n)],
        "merchant_id": [f"m{i}" for i in range(n)],
        "region": np.array(["north", None, "east", "north"], dtype=object),
        "tier": np.array(["2", None, "3", "1"], dtype=object),
        "rating": np.array([4.5, np.nan, 1.0, 2.0]),
        "verified": np.array([1.0, np.nan, 0.0, 1.0]),
        "score": np.full(n, 0.5, dtype=np.float32),
        "label": np.ones(n, dtype=np.int64),
        "defaulted": np.array([False, True, False, False]),
    }
    with InferenceLog(storage, config) as log:
        log.append(row, model_version="1", request_id="r1", protocol="v2")
    table = read_inference_log(storage, config)
    assert table.num_rows == n
    assert table.column("region").to_pylist() == ["north", None, "east", "north"]
    assert table.column("tier").to_pylist() == [2, None, 3, 1]
    assert table.column("rating").to_pylist() == [4.5, None, 1.0, 2.0]
    assert table.column("verified").to_pylist() == [True, None, False, True]


def test_the_lookups_category_values_become_the_vocabularys_text() -> None:
    got = _stored_categories(["north", None, 2, 3.0, float("nan")])
    assert got.dtype == object and got.tolist() == ["north", None, "2", "3", None]


def _model_on(config: Config) -> LoadedModel:
    """A model whose preprocessor takes exactly ``config``'s inputs (its network is never called)."""
    numeric, categorical = feature_columns(config)
    vocab = {c: [UNKNOWN] for c in categorical}
    pre = Preprocessor(numeric, categorical, [0.0] * len(numeric), [1.0] * len(numeric), vocab)
    return LoadedModel("1", 0.5, "pytorch", pre, predict_arrays=lambda x_num, x_cat: np.zeros(len(x_num)))


def test_the_champion_check_knows_a_tables_categories(tmp_path: Path) -> None:
    config = table_config(tmp_path)
    assert input_mismatch(config, _model_on(config)) is None
    # trained when the tier code was a number: refused, saying which kind each side has
    data = config.model_dump(mode="json")
    data["features"]["categorical"] = []
    reason = input_mismatch(config, _model_on(parse_config(data, "test config")))
    assert reason is not None and "needs numeric input(s) tier" in reason
    assert "was not trained on categorical input(s) tier" in reason and "features.categorical" in reason
    # trained under the other naming: the table's category counts among its stored inputs
    data = config.model_dump(mode="json")
    data["features"]["naming"] = "full"
    data["features"]["categorical"] = [f"{TABLE}__tier"]
    reason = input_mismatch(parse_config(data, "test config"), _model_on(config))
    assert reason is not None and "trained with features.naming: short" in reason


# --- end to end: ingested table → materialized → served (slow) -------------------------------------------------------


def load_merchants(loop: Loop, table: pd.DataFrame, path: Path) -> None:
    """Ingest and validate the merchants table from ``table`` written as CSV (as a user's file)."""
    table.to_csv(path, index=False)
    config = loop.config.table_config(TABLE)
    ingest(config, loop.storage, source_uri=str(path))
    result = validate(config, loop.storage, now=NOW)
    assert result.report.gate_passed, [c.check for c in result.report.checks if not c.passed]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A workspace with the merchants table (one merchant left out), features online and a champion trained on
    them. Named as conftest's fixture so the separate-components fixture serves this workspace."""
    root = tmp_path_factory.mktemp("tables")

    def edit(data: dict) -> None:
        relaxed(data)
        add_merchants_table(data, str(root / "merchants.csv"))

    loop = Loop.create(root / "ws", sqlite_backend(), edit)
    frame = generate(DemoSpec(rows=4000, seed=37)).frame
    merchants = merchants_frame(frame["merchant_id"].tolist())
    absent = frame["merchant_id"].iloc[1]  # a merchant the table lacks: its rows are served with defaults
    load_merchants(loop, merchants[merchants["merchant_id"] != absent], root / "merchants.csv")
    loop.load(frame)
    loop.materialize()
    loop.training_set()
    card = train_and_register(loop.config, loop.storage, pipeline_run="table-tests")
    ModelRegistry(loop.storage, loop.config.training.model_name).promote(card["version"], "table tests")
    return Trained(loop, frame, card["version"])


def champion_model(trained: Trained, directory: Path) -> LoadedModel:
    registry = ModelRegistry(trained.loop.storage, trained.config.training.model_name)
    model_dir = registry.fetch(trained.champion, directory)
    (model_dir / CARD_FILE).write_text(json.dumps(registry.get(trained.champion).card, default=str))
    return load_model_dir(model_dir)


def attributes(trained: Trained) -> pd.DataFrame:
    """The table's rows by merchant, as ingested."""
    return pd.read_csv(Path(trained.config.features.table(TABLE).source.uri), dtype={"tier": "Int64"}).set_index(
        "merchant_id"
    )


def expected(trained: Trained, merchant_ids: list[str], column: str) -> list:
    table = attributes(trained)
    return [None if m not in table.index or pd.isna(table.at[m, column]) else table.at[m, column] for m in merchant_ids]


@pytest.mark.slow
def test_the_champion_takes_the_tables_categories_and_the_transformer_looks_them_up(
    trained: Trained, tmp_path: Path
) -> None:
    storage = trained.loop.storage
    split = load_split(storage, latest_training_set(trained.config, storage), "train")  # what training read
    assert split["region"].dropna().map(type).eq(str).all() and set(split["region"].dropna()) == set(REGIONS)
    assert split["region"].isna().any()  # the merchant without a row
    model = champion_model(trained, tmp_path / "model")
    pre = model.preprocessor
    assert pre.categorical[:2] == CATEGORIES and "rating" in pre.numeric
    assert pre.vocabularies["region"] == [UNKNOWN, *sorted(REGIONS)]
    assert pre.vocabularies["tier"] == [UNKNOWN, "1", "2", "3"]
    assert input_mismatch(trained.config, model) is None

    rows = trained.request_rows(40)
    assert "region" not in rows[0] and "tier" not in rows[0]  # the client sends the key only
    lookup = open_lookup(trained.config, trained.loop.storage, os.environ)
    transformer = Transformer(trained.config, lookup, predictor=None)
    batch = asyncio.run(transformer.preprocess({"instances": rows}))
    merchants = [r["merchant_id"] for r in rows]
    assert batch.inputs["region"].tolist() == expected(trained, merchants, "region")
    tiers = expected(trained, merchants, "tier")
    assert batch.inputs["tier"].tolist() == [None if t is None else str(t) for t in tiers]
    ratings = [np.nan if r is None else r for r in expected(trained, merchants, "rating")]
    np.testing.assert_allclose(batch.inputs["rating"], ratings)
    absent = [m not in attributes(trained).index for m in merchants]
    assert any(absent) and batch.defaulted[absent].all()


@pytest.mark.slow
def test_served_with_the_key_only_and_logged_with_the_tables_attributes(
    trained: Trained, start_server, tmp_path: Path
) -> None:
    server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    assert {s.name for s in client.specs}.isdisjoint({"region", "tier", "rating"})  # not request inputs
    rows = trained.request_rows(30)
    got = {p: client.predict(rows, p) for p in ("v1", "v2", "grpc")}
    scores = [p["score"] for p in got["v1"]["predictions"]]
    for protocol in ("v2", "grpc"):
        np.testing.assert_allclose([p["score"] for p in got[protocol]["predictions"]], scores, rtol=1e-6)

    # the scores are the champion's on the table's attributes (and not on other ones)
    model = champion_model(trained, tmp_path / "model")
    lookup = open_lookup(trained.config, trained.loop.storage, os.environ)
    batch = asyncio.run(Transformer(trained.config, lookup, predictor=None).preprocess({"instances": rows}))
    np.testing.assert_allclose(model.score(batch.inputs, len(rows))[0], scores, rtol=1e-5)
    regions = ["south" if r == "north" else "north" for r in batch.inputs["region"]]
    moved = {**batch.inputs, "region": np.array(regions, dtype=object)}
    assert not np.allclose(model.score(moved, len(rows))[0], scores, rtol=1e-5)

    server.stop()  # the last flush of the inference log
    log = read_inference_log(trained.loop.storage, trained.config).to_pandas()
    assert len(log) == 3 * len(rows)
    merchants = [r["merchant_id"] for r in rows]
    for _, one in log.groupby("protocol"):
        assert one["merchant_id"].tolist() == merchants
        assert one["region"].tolist() == expected(trained, merchants, "region")
        assert [None if pd.isna(t) else int(t) for t in one["tier"]] == expected(trained, merchants, "tier")


@pytest.mark.slow
def test_a_separate_predictor_takes_the_category_as_bytes(
    trained: Trained,
    components: tuple[Component, Component, Component],  # noqa: F811
    start_server,
    tmp_path: Path,
) -> None:
    """The cluster layout: the transformer sends the stored category to the predictor as a BYTES tensor (V2
    REST and gRPC) and gets the one-process server's scores."""
    _, via_rest, via_grpc = components
    local = start_server(trained.write_config(tmp_path / "kfloop.json"))
    rows = trained.request_rows(25)
    want = [p["score"] for p in ServingClient.for_config(trained.config, local.url).predict(rows, "v1")["predictions"]]
    for transformer in (via_rest, via_grpc):
        client = ServingClient.for_config(
            trained.config, f"http://127.0.0.1:{transformer.http_port}", f"127.0.0.1:{transformer.grpc_port}"
        )
        for protocol in ("v1", "v2", "grpc"):
            got = [p["score"] for p in client.predict(rows, protocol)["predictions"]]
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{transformer.log.name} {protocol}")


@pytest.mark.slow
def test_a_reingested_attribute_changes_the_served_score(trained: Trained, start_server, tmp_path: Path) -> None:
    """Last in the module: it changes the table. One merchant moves region; after ingest → validate → features
    → materialize, the running server scores its rows on the new region (others unchanged)."""
    server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    client = ServingClient.for_config(trained.config, server.url)
    rows = trained.request_rows(60)
    before = [p["score"] for p in client.predict(rows, "v1")["predictions"]]
    table = attributes(trained).reset_index()
    merchant = rows[0]["merchant_id"]
    old = table.loc[table["merchant_id"] == merchant, "region"].item()
    table.loc[table["merchant_id"] == merchant, "region"] = next(r for r in REGIONS if r != old)
    load_merchants(trained.loop, table, Path(trained.config.features.table(TABLE).source.uri).with_name("m2.csv"))
    compute_features(trained.config, trained.loop.storage)
    trained.loop.materialize()
    after = [p["score"] for p in client.predict(rows, "v1")["predictions"]]
    mine = np.array([r["merchant_id"] == merchant for r in rows])
    assert not np.allclose(np.array(after)[mine], np.array(before)[mine], rtol=1e-5)
    np.testing.assert_allclose(np.array(after)[~mine], np.array(before)[~mine], rtol=1e-6)
