"""A regression model end to end: trained on the demo (the 0/1 outcome read as a number), registered, gated
on its RMSE and R², promoted, and served by a real `kfloop serve` over V1, V2 and gRPC, where ``score`` is
the prediction (equal to the offline model's), no ``label`` is returned or declared, and the inference log
keeps the prediction with a null label."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kfloop.components.evaluate import evaluate_and_gate, gate
from kfloop.components.train import train_and_register
from kfloop.config import config_to_json, parse_config
from kfloop.demo import DemoSpec, generate
from kfloop.pipelines.components import evaluate_component
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, v2_inputs
from kfloop.serving.inference_log import read_inference_log
from kfloop.serving.protocol import request_specs
from kfloop.training.trainer import load_exported
from tests.feature_repo.harness import Loop, sqlite_backend
from tests.serving.conftest import Server, relaxed

pytestmark = pytest.mark.slow


def regression(data: dict) -> None:
    relaxed(data)
    data["training"]["task"] = "regression"
    data["training"]["gate"] = {"max_rmse": 1.0, "min_r2": -1.0, "tolerance": 0.05}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Loop, pd.DataFrame]:
    loop = Loop.create(tmp_path_factory.mktemp("regression") / "ws", sqlite_backend(), regression)
    frame = generate(DemoSpec(rows=4000, seed=21)).frame
    loop.load(frame)
    loop.materialize()
    loop.training_set()
    return loop, frame


def test_a_regressor_is_trained_gated_and_served_over_every_protocol(
    loop: tuple[Loop, pd.DataFrame], tmp_path: Path
) -> None:
    lp, frame = loop
    config = lp.config
    card = train_and_register(config, lp.storage, pipeline_run="regression-test")
    assert card["task"] == "regression" and set(card["metrics"]["validation"]) >= {"mae", "rmse", "r2"}
    decision = evaluate_and_gate(config, lp.storage, card["version"])
    assert decision["promoted"] and decision["curves"] is None, decision["reasons"]
    assert {"mae", "rmse", "r2"} <= set(decision["candidate"]) and "roc_auc" not in decision["candidate"]
    assert decision["candidate"]["rmse"] <= 1.0
    registry = ModelRegistry(lp.storage, config.training.model_name)
    assert registry.champion().version == card["version"]

    data = config.model_dump(mode="json")
    data["training"]["gate"]["max_rmse"] = 1e-6
    strict = parse_config(data, "strict gate")
    assert gate(strict, decision["candidate"], None)[1] == [
        f"RMSE {decision['candidate']['rmse']:.4f} is above the maximum 1e-06"
    ]
    again = evaluate_and_gate(strict, lp.storage, card["version"])  # the champion itself: not gated again
    assert again["promoted"] and again.get("reused")

    path = tmp_path / "kfloop.json"
    path.write_text(lp.config.model_dump_json())
    server = Server(path).start()
    try:
        cols = list(dict.fromkeys([*config.source.entity_keys, *config.features.request_features]))
        records = frame[cols].iloc[:20].to_dict("records")
        rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in records]
        client = ServingClient.for_config(config, server.url, server.grpc_target)
        results = {p: client.predict(rows, p) for p in ("v1", "v2", "grpc")}
        for protocol, result in results.items():
            assert result["model_version"] == card["version"], protocol
            assert all("label" not in p for p in result["predictions"]), protocol
        scores = {p: np.array([x["score"] for x in r["predictions"]]) for p, r in results.items()}
        np.testing.assert_allclose(scores["v1"], scores["grpc"], rtol=1e-6)
        np.testing.assert_allclose(scores["v2"], scores["grpc"], rtol=1e-6)
        assert not np.all((scores["v2"] == 0) | (scores["v2"] == 1))  # a prediction, not a thresholded label
        offline = _offline(lp, rows, registry.fetch(card["version"], tmp_path / "model"))
        np.testing.assert_allclose(scores["v2"], offline, rtol=1e-5, atol=1e-5)

        name = config.training.model_name
        meta = httpx.get(f"{server.url}/v2/models/{name}").json()
        assert [o["name"] for o in meta["outputs"]] == ["score", "defaulted"]
        body = httpx.post(
            f"{server.url}/v2/models/{name}/infer",
            json={"inputs": v2_inputs(rows[:2], request_specs(config)), "outputs": [{"name": "label"}]},
        )
        assert body.status_code == 400 and "unknown output(s) 'label'" in body.text
    finally:
        assert server.stop() == 0

    log = read_inference_log(lp.storage, config).to_pandas()
    assert len(log) >= 60 and log["label"].isna().all() and log["score"].notna().all()


def test_the_kfp_evaluate_step_logs_regression_metrics_and_no_classification(
    loop: tuple[Loop, pd.DataFrame], tmp_path: Path
) -> None:
    lp, _ = loop
    card = train_and_register(lp.config, lp.storage)  # the same identity as above: reused, champion already
    metrics, classification = _Logged(), _Logged()
    decision = _Logged()
    decision.path = str(tmp_path / "decision.md")
    champion = evaluate_component(config_to_json(lp.config), card["version"], metrics, classification, decision)
    assert champion == card["version"]
    assert {"test_mae", "test_rmse", "test_r2", "promoted"} <= set(metrics.logged)
    assert not classification.logged  # no ROC curve or confusion matrix for a regressor
    assert "| rmse |" in Path(decision.path).read_text()


class _Logged:
    """A stand-in for KFP's Metrics / ClassificationMetrics / Markdown outputs."""

    def __init__(self) -> None:
        self.logged: dict[str, object] = {}
        self.path = ""

    def log_metric(self, key: str, value: float) -> None:
        self.logged[key] = value

    def log_roc_curve(self, *args: object) -> None:
        self.logged["roc"] = args

    def log_confusion_matrix(self, *args: object) -> None:
        self.logged["confusion"] = args


def _offline(lp: Loop, rows: list[dict], model_dir: Path) -> np.ndarray:
    """The exported model on features read through the Feast SDK (not the serving path)."""
    cfg = lp.config
    store = lp.store()
    keys = [{k: r[k] for k in cfg.source.entity_keys} for r in rows]
    online = store.get_online_features(features=store.get_feature_service(cfg.features.service), entity_rows=keys)
    frame = pd.DataFrame(online.to_dict())
    for col in cfg.features.request_features:
        frame[col] = [r[col] for r in rows]
    return load_exported(model_dir)(frame)
