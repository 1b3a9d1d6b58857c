"""Multiclass (``training.task: multiclass``): both frameworks learn string classes made from the demo's
features, the class vocabulary (fitted on train) is saved with the export, which reloads with the same
class probabilities, and the metrics are accuracy, macro-F1, log loss and ROC AUC per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.train import training_set
from kfloop.config import load_config, parse_config
from kfloop.errors import ConfigError, KfloopError
from kfloop.training import classes
from kfloop.training.metrics import evaluate_multiclass
from kfloop.training.trainer import TrainedModel, export, load_exported, train

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "kfloop.yaml"
Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


def demo(**training: object) -> dict:
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["training"].update(training)
    return data


@pytest.fixture(scope="module")
def splits() -> Splits:
    frame = training_set(parse_config(demo(), "c"), 6000, 9)
    amount = np.log1p(frame["amount"].to_numpy(dtype=float))
    cuts = np.quantile(amount, [0.3, 0.7])
    frame["is_fraud"] = np.where(amount < cuts[0], "small", np.where(amount < cuts[1], "medium", "large"))
    a, b = int(len(frame) * 0.7), int(len(frame) * 0.85)
    return frame.iloc[:a], frame.iloc[a:b].reset_index(drop=True), frame.iloc[b:].reset_index(drop=True)


_trained: dict[str, TrainedModel] = {}


def trained(splits: Splits, framework: str) -> TrainedModel:
    if framework not in _trained:
        config = parse_config(demo(task="multiclass", gate={}, framework=framework, epochs=15), "c")
        _trained[framework] = train(config, splits[0], splits[1])
    return _trained[framework]


@pytest.mark.parametrize("framework", ["pytorch", pytest.param("tensorflow", marks=pytest.mark.slow)])
def test_a_multiclass_model_learns_string_classes_and_reloads(splits: Splits, framework: str, tmp_path: Path) -> None:
    model = trained(splits, framework)
    assert model.classes == ["large", "medium", "small"]  # sorted class texts, fitted on train
    test = splits[2]
    p = model.predict(test)
    assert p.shape == (len(test), 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    metrics = evaluate_multiclass(classes.indices(test["is_fraud"], model.classes), p, model.classes)
    print(f"{framework}: {metrics}")
    assert metrics["macro_f1"] > 0.7 and metrics["roc_auc_small"] > 0.9
    assert {"accuracy", "macro_f1", "log_loss", "roc_auc_macro"} <= set(model.metrics)
    files = export(model, tmp_path / "m")
    assert classes.CLASSES_FILE in files and classes.read(tmp_path / "m") == model.classes
    np.testing.assert_allclose(load_exported(tmp_path / "m")(test), p, rtol=1e-5, atol=1e-6)


def test_multiclass_metrics_count_an_unseen_class_as_wrong() -> None:
    y = np.array([0, 1, 2, -1])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    m = evaluate_multiclass(y, p, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["unseen_class_rows"] == 1 and m["roc_auc_a"] == 1.0
    assert classes.indices(pd.Series([3, "3", 3.0, 7]), ["3", "4"]).tolist() == [0, 0, 0, -1]
    with pytest.raises(KfloopError, match="only class 3"):
        classes.fit(pd.Series([3, 3]))
    assert classes.class_weights(np.array([0, 0, 0, 1]), 2, True).tolist() == pytest.approx([2 / 3, 2.0])


def test_a_multiclass_label_must_be_int_or_string_and_its_gate_its_own() -> None:
    data = demo(task="multiclass", gate={})
    data["source"]["columns"]["is_fraud"] = "float64"
    with pytest.raises(ConfigError, match="multiclass needs int64 or string classes"):
        parse_config(data, "c")
    with pytest.raises(ConfigError, match="compare_metric: pr_auc is not a multiclass metric"):
        parse_config(demo(task="multiclass"), "c")
    assert parse_config(demo(task="multiclass", gate={}), "c").training.gate.compared("multiclass") == "macro_f1"
