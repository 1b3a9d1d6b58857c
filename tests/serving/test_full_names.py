"""``features.naming: full`` trained and served end to end: the same aggregate in two views reaches the model
as two inputs (``<view>__amount_mean_24h``), each with its own view's values, in training and at serving."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest

from kfloop.components.train import train_and_register
from kfloop.demo import DemoSpec, generate
from kfloop.layout import CARD_FILE
from kfloop.registry import ModelRegistry
from kfloop.serving.champion import input_mismatch
from kfloop.serving.client import ServingClient
from kfloop.serving.predictor import load_model_dir
from kfloop.serving.server import open_lookup
from kfloop.serving.transformer import Transformer
from tests.feature_repo.harness import Loop, sqlite_backend
from tests.feature_repo.test_feature_naming import CUSTOMER_SHARED, MERCHANT_SHARED, shared_aggregate
from tests.serving.conftest import Trained, relaxed

pytestmark = pytest.mark.slow


def _full_names(data: dict) -> None:
    relaxed(data)
    shared_aggregate()(data)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("full-names")
    loop = Loop.create(root / "ws", sqlite_backend(), _full_names)
    frame = generate(DemoSpec(rows=4000, seed=31)).frame
    loop.load(frame)
    loop.materialize()
    rows = loop.splits(loop.training_set())["train"]
    both = rows[[CUSTOMER_SHARED, MERCHANT_SHARED]].dropna()
    assert len(both) and (both[CUSTOMER_SHARED] != both[MERCHANT_SHARED]).any()
    card = train_and_register(loop.config, loop.storage, pipeline_run="full-name-tests")
    ModelRegistry(loop.storage, loop.config.training.model_name).promote(card["version"], "full name tests")
    return Trained(loop, frame, card["version"])


def test_the_model_takes_both_views_aggregates_and_serves_each_views_values(full: Trained, tmp_path: Path) -> None:
    registry = ModelRegistry(full.loop.storage, full.config.training.model_name)
    directory = registry.fetch(full.champion, tmp_path / "model")
    (directory / CARD_FILE).write_text(json.dumps(registry.get(full.champion).card, default=str))  # as serving does
    model = load_model_dir(directory)
    assert {CUSTOMER_SHARED, MERCHANT_SHARED} <= set(model.preprocessor.numeric)
    assert input_mismatch(full.config, model) is None
    lookup = open_lookup(full.config, full.loop.storage, os.environ)  # as of the demo's end (conftest)
    transformer = Transformer(full.config, lookup, predictor=None)
    batch = asyncio.run(transformer.preprocess({"instances": full.request_rows(50)}))
    customer, merchant = batch.inputs[CUSTOMER_SHARED], batch.inputs[MERCHANT_SHARED]
    assert np.isfinite(customer).any() and np.isfinite(merchant).any()
    assert not np.allclose(customer, merchant, equal_nan=True)
    expected = lookup.get_batch({k: [r[k] for r in full.request_rows(50)] for k in lookup.join_keys})[0]
    assert np.allclose(merchant, np.array(expected[MERCHANT_SHARED], dtype=float), equal_nan=True)


def test_kfloop_serve_scores_under_full_names(full: Trained, start_server, tmp_path: Path) -> None:
    server = start_server(full.write_config(tmp_path / "kfloop.json"))
    client = ServingClient.for_config(full.config, server.url, server.grpc_target)
    predictions = client.predict(full.request_rows(20), "v1")["predictions"]
    assert len(predictions) == 20 and all(0.0 <= p["score"] <= 1.0 for p in predictions)
