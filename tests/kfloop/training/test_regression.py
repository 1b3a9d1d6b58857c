"""Regression (``training.task: regression``): both frameworks learn a numeric label in its own units, the
export reloads with the same predictions, the metrics are MAE/RMSE/R², and a label unfit for the task is
refused at config load and in the trainer with a message that names the task.

The data: the demo's point-in-time training set with the label replaced by a linear function of two
numeric features plus noise, so a good regressor is known to exist (R² well above 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.train import training_set
from kfloop.config import Config, load_config, parse_config
from kfloop.errors import ConfigError, KfloopError
from kfloop.training.metrics import evaluate_regression
from kfloop.training.model_io import label_scaling
from kfloop.training.trainer import TrainedModel, export, load_exported, train

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "examples" / "fraud" / "kfloop.yaml"
ROWS, SEED = 6_000, 7
Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


def demo(**training: object) -> dict:
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["training"].update(training)
    return data


def regression_config(**training: object) -> Config:
    return parse_config(demo(task="regression", gate={}, epochs=30, **training), "test config")


@pytest.fixture(scope="module")
def splits() -> Splits:
    frame = training_set(regression_config(), ROWS, SEED)
    rng = np.random.default_rng(SEED)
    x1 = np.log1p(frame["amount"].to_numpy(dtype=float))
    x2 = frame["amount_count_1h"].fillna(0).to_numpy(dtype=float)
    frame["is_fraud"] = 50.0 + 20.0 * x1 - 5.0 * x2 + rng.normal(0, 2.0, len(frame))
    a, b = int(len(frame) * 0.7), int(len(frame) * 0.85)
    return frame.iloc[:a], frame.iloc[a:b].reset_index(drop=True), frame.iloc[b:].reset_index(drop=True)


_trained: dict[str, TrainedModel] = {}


def trained(splits: Splits, framework: str) -> TrainedModel:
    if framework not in _trained:
        _trained[framework] = train(regression_config(framework=framework), splits[0], splits[1])
    return _trained[framework]


@pytest.mark.parametrize("framework", ["pytorch", pytest.param("tensorflow", marks=pytest.mark.slow)])
def test_regressor_learns_the_label_in_its_units_and_reloads(splits: Splits, framework: str, tmp_path: Path) -> None:
    model = trained(splits, framework)
    test = splits[2]
    y, p = test["is_fraud"].to_numpy(), model.predict(test)
    metrics = evaluate_regression(y, p)
    print(f"{framework}: test {metrics}")
    assert metrics["r2"] > 0.6  # a constant guess scores 0
    assert abs(p.mean() - y.mean()) < 0.3 * y.std()  # de-standardized: the label's own units
    assert set(model.metrics) == {"mae", "rmse", "r2", "label_mean", "rows"}
    assert model.metrics["rmse"] >= model.metrics["mae"] > 0 and model.threshold == 0.0
    assert model.hyperparameters["pos_weight"] == 1.0
    export(model, tmp_path / "export")
    np.testing.assert_allclose(load_exported(tmp_path / "export")(test), p, rtol=1e-5, atol=1e-4)


def test_regression_metrics_and_label_scaling() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = evaluate_regression(y, y + np.array([1.0, -1.0, 1.0, -1.0]))
    assert m["mae"] == 1.0 and m["rmse"] == 1.0 and m["r2"] == pytest.approx(1 - 4 / 5)
    assert np.isnan(evaluate_regression(np.ones(3), np.ones(3))["r2"])
    assert label_scaling(np.ones(5)) == (1.0, 1.0)  # a constant label: no division by zero


def test_a_label_unfit_for_the_task_fails_at_config_load() -> None:
    data = demo(task="regression", gate={})
    data["source"]["columns"]["is_fraud"] = "string"
    data["contract"]["columns"].pop("is_fraud", None)
    with pytest.raises(ConfigError, match="regression needs an int64 or float64 label"):
        parse_config(data, "test config")
    data["training"]["task"] = "binary"
    with pytest.raises(ConfigError, match=r"binary needs a 0/1 label.*training.task: regression"):
        parse_config(data, "test config")
    data = demo()
    data["contract"]["columns"]["is_fraud"] = {"min": 0, "max": 0.5}
    with pytest.raises(ConfigError, match="min/max exclude 0 or 1"):
        parse_config(data, "test config")
    with pytest.raises(ConfigError, match="compare_metric: pr_auc is not a regression metric"):
        parse_config(demo(task="regression", gate={"compare_metric": "pr_auc"}), "test config")
    with pytest.raises(ConfigError, match="compare_metric: rmse is not a binary metric"):
        parse_config(demo(gate={"compare_metric": "rmse"}), "test config")
    assert parse_config(demo(task="regression", gate={}), "c").training.gate.compared("regression") == "rmse"
    assert parse_config(demo(), "c").training.gate.compared("binary") == "pr_auc"


def test_the_trainer_names_the_task_when_a_label_does_not_fit(splits: Splits) -> None:
    train_, val, _ = splits
    with pytest.raises(KfloopError, match=r"must be 0 or 1 for training.task binary.*regression"):
        train(parse_config(demo(), "c"), train_, val)  # a numeric outcome left as a binary task
    with pytest.raises(KfloopError, match="must be a finite number"):
        train(regression_config(), train_.assign(is_fraud=np.inf), val)
