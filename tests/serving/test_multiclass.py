"""A multiclass model end to end: the demo's outcome read as classes ("0", "1"), trained, gated on macro-F1,
promoted, and served over V1, V2 and gRPC: ``label`` is the likeliest class (a BYTES output), ``score`` its
probability, and the inference log keeps the class name."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kfloop.components.evaluate import evaluate_and_gate
from kfloop.components.train import train_and_register
from kfloop.demo import DemoSpec, generate
from kfloop.serving.client import ServingClient
from kfloop.serving.inference_log import read_inference_log
from tests.feature_repo.harness import Loop, sqlite_backend
from tests.serving.conftest import Server, relaxed

pytestmark = pytest.mark.slow


def multiclass(data: dict) -> None:
    relaxed(data)
    data["training"]["task"] = "multiclass"
    data["training"]["gate"] = {"min_macro_f1": 0.3}


def test_a_multiclass_model_is_gated_and_serves_class_names(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), multiclass)
    frame = generate(DemoSpec(rows=4000, seed=23)).frame
    loop.load(frame)
    loop.materialize()
    loop.training_set()
    config = loop.config
    card = train_and_register(config, loop.storage, pipeline_run="multiclass-test")
    assert card["task"] == "multiclass" and card["classes"] == ["0", "1"]
    decision = evaluate_and_gate(config, loop.storage, card["version"])
    assert decision["promoted"], decision["reasons"]
    assert decision["curves"]["classes"] == ["0", "1"] and len(decision["curves"]["confusion_matrix"]) == 2
    assert {"accuracy", "macro_f1", "log_loss", "roc_auc_1"} <= set(decision["candidate"])

    path = tmp_path / "kfloop.json"
    path.write_text(config.model_dump_json())
    server = Server(path).start()
    try:
        cols = list(dict.fromkeys([*config.source.entity_keys, *config.features.request_features]))
        rows = [
            {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame[cols].iloc[:20].to_dict("records")
        ]
        client = ServingClient.for_config(config, server.url, server.grpc_target)
        results = {p: client.predict(rows, p) for p in ("v1", "v2", "grpc")}
        for protocol, result in results.items():
            labels = [p["label"] for p in result["predictions"]]
            assert set(labels) <= {"0", "1"}, (protocol, labels)
            assert all(0.5 <= p["score"] <= 1.0 for p in result["predictions"]), protocol  # the likeliest's
        scores = {p: np.array([x["score"] for x in r["predictions"]]) for p, r in results.items()}
        np.testing.assert_allclose(scores["v1"], scores["grpc"], rtol=1e-6)
        assert [p["label"] for p in results["v2"]["predictions"]] == [p["label"] for p in results["v1"]["predictions"]]
        meta = httpx.get(f"{server.url}/v2/models/{config.training.model_name}").json()
        assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
            "score": "FP32",
            "label": "BYTES",
            "defaulted": "BOOL",
        }
    finally:
        assert server.stop() == 0
    log = read_inference_log(loop.storage, config).to_pandas()
    assert len(log) >= 60 and set(log["label"]) <= {"0", "1"}
