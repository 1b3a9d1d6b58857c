"""Entity keys and integer codes as categorical model inputs, trained and served end to end: a key is sent
once and feeds both the lookup and the model; an integer code means the same category whether a client sends
it as a JSON integer (V1), an INT64 or an FP64 tensor (V2)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient
from kfloop.training.model_io import PREPROCESS_FILE
from kfloop.training.preprocess import UNKNOWN, Preprocessor, feature_columns
from tests.serving.conftest import Trained, relaxed, served_champion

pytestmark = pytest.mark.slow


def _keys_and_codes(data: dict) -> None:
    relaxed(data)
    data["features"]["request_features"] = ["merchant_id", *data["features"]["request_features"]]
    data["features"]["categorical"] = ["hour_of_day"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return served_champion(tmp_path_factory.mktemp("keyed"), _keys_and_codes, rows=4000, seed=29, run="key-input-tests")


def test_a_key_and_an_integer_code_are_categories_of_the_trained_model(keyed: Trained, tmp_path: Path) -> None:
    numeric, categorical = feature_columns(keyed.config)
    assert "merchant_id" in categorical and "hour_of_day" in categorical and "hour_of_day" not in numeric
    registry = ModelRegistry(keyed.loop.storage, keyed.config.training.model_name)
    model_dir = registry.fetch(keyed.champion, tmp_path / "model")
    pre = Preprocessor.from_json((model_dir / PREPROCESS_FILE).read_text())
    hours = pre.vocabularies["hour_of_day"]
    assert hours[0] == UNKNOWN and set(hours[1:]) <= {str(h) for h in range(24)} and "3.0" not in hours
    assert set(pre.vocabularies["merchant_id"][1:]) <= set(keyed.frame["merchant_id"].astype(str))


def test_codes_match_however_the_number_arrives() -> None:
    pre = Preprocessor.fit(
        pd.DataFrame({"h": [1.0, 3.0, None, 3.0]}),  # an int column with nulls reads as floats
        numeric=[],
        categorical=["h"],
    )
    n = 4
    _, as_ints = pre.transform_columns({"h": np.array([3, 1, 7, None], dtype=object)}, n)
    _, as_floats = pre.transform_columns({"h": np.array([3.0, 1.0, 7.0, np.nan], dtype=object)}, n)
    assert as_ints[:, 0].tolist() == as_floats[:, 0].tolist() == [2, 1, 0, 0]  # 7 unseen, None missing → 0


def test_served_over_every_protocol_with_the_key_sent_once(keyed: Trained, start_server, tmp_path: Path) -> None:
    server = start_server(keyed.write_config(tmp_path / "kfloop.json"))
    meta = httpx.get(f"{server.url}/v2/models/{keyed.config.training.model_name}", timeout=10).json()
    names = [i["name"] for i in meta["inputs"]]
    assert names.count("merchant_id") == 1  # a key the model also takes is still one request column
    client = ServingClient.for_config(keyed.config, server.url, server.grpc_target)
    rows = keyed.request_rows(20)
    scores = {p: [r["score"] for r in client.predict(rows, p)["predictions"]] for p in ("v1", "v2", "grpc")}
    assert np.allclose(scores["v1"], scores["v2"], atol=1e-6) and np.allclose(scores["v1"], scores["grpc"], atol=1e-6)
    # an FP64 tensor for the integer code scores exactly like the INT64 one
    body = {
        "inputs": [
            {
                "name": s.name,
                "datatype": "FP64" if s.kind == "number" else "BYTES",
                "shape": [1],
                "data": [rows[0][s.name]],
            }
            for s in client.specs
        ]
    }
    url = f"{server.url}/v2/models/{keyed.config.training.model_name}/infer"
    as_float = httpx.post(url, json=body, timeout=10).json()
    score = next(o["data"][0] for o in as_float["outputs"] if o["name"] == "score")
    assert score == pytest.approx(scores["v1"][0], abs=1e-6)
