"""Calibration (``training.calibration``): Platt and isotonic maps fitted on validation lower the
calibration error of class-weighted scores, keep their ranking exactly (strictly increasing: no ties, no
reversal), are saved with the export (and listed among its checksums), and are applied alike by
``load_exported`` and by the serving predictor. The default (auto) calibrates a class-weighted model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks.train import training_set
from kfloop.config import load_config, parse_config
from kfloop.errors import StorageError
from kfloop.layout import CARD_FILE
from kfloop.serving.predictor import load_model_dir
from kfloop.training import calibration
from kfloop.training.metrics import brier_score, calibration_error
from kfloop.training.trainer import export, load_exported, train

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "kfloop.yaml"


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_fitted_map_lowers_calibration_error_and_keeps_the_ranking(method: str) -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.05).astype(int)
    p = np.clip(0.5 * y + rng.random(3000) * 0.6, 0, 1)  # scores that overstate the 5 % positive rate
    cal = calibration.fit(method, y, p)
    q = cal.apply(p)
    assert calibration_error(y, q) < calibration_error(y, p) / 2
    assert np.all(np.diff(q[np.argsort(p)]) >= -1e-12)  # monotonic: the ranking stays
    again = calibration.Calibrator.from_json(cal.to_json())
    np.testing.assert_allclose(again.apply(p), q)


def test_isotonic_ties_and_a_falling_platt_fit_do_not_change_the_ranking() -> None:
    """Isotonic pools scores into flat steps; ties would lower ROC AUC and PR AUC. A model worse than chance
    on validation gets a negative Platt slope, which would reverse its ranking into a good one (and pass a
    gate it should fail). Both maps are strictly increasing: the ranking metrics are the raw scores'."""
    rng = np.random.default_rng(7)
    y = (rng.random(4000) < 0.05).astype(int)
    p = np.clip(0.3 * y + rng.random(4000) * 0.7, 0, 1)
    iso = calibration.fit("isotonic", y, p)
    assert len(set(iso.y)) < len(iso.y)  # it has flat steps ...
    q = iso.apply(p)
    assert len(np.unique(q)) == len(np.unique(p))  # ... yet no two scores tie
    assert roc_auc_score(y, q) == roc_auc_score(y, p) and average_precision_score(y, q) == average_precision_score(y, p)
    assert np.abs(q - np.interp(p, iso.x, iso.y)).max() <= calibration.TIE_BREAK  # a negligible change

    falling = 1.0 - p  # scores that fall as the positive rate rises
    platt = calibration.fit("platt", y, falling)
    assert platt.params[0] == 0.0  # the best non-decreasing fit: the base rate for every score
    r = platt.apply(falling)
    assert np.all(np.diff(r[np.argsort(falling)]) > 0)
    assert roc_auc_score(y, r) == roc_auc_score(y, falling) < 0.5  # still worse than chance: the gate sees it
    assert abs(r.mean() - y.mean()) < 1e-3


def test_auto_is_platt_unless_validation_has_enough_of_both_classes_for_isotonic() -> None:
    few = np.r_[np.ones(999), np.zeros(50_000)]
    many = np.r_[np.ones(1000), np.zeros(1000)]
    assert calibration.resolve("auto", "balanced", few) == "platt"
    assert calibration.resolve("auto", "balanced", many) == "isotonic"
    assert calibration.resolve("auto", "none", many) == "none"  # unweighted scores are frequencies already
    assert calibration.resolve("isotonic", "balanced", few) == "isotonic"  # an explicit choice is kept
    assert calibration.resolve("none", "balanced", many) == "none"


def test_a_calibration_file_written_before_the_tie_break_applies_as_it_did() -> None:
    old = calibration.Calibrator.from_json('{"method": "platt", "params": [1.5, -2.0], "x": [], "y": []}')
    p = np.array([0.1, 0.5, 0.9])
    assert old.tie_break == 0.0
    np.testing.assert_allclose(old.apply(p), 1 / (1 + np.exp(-(1.5 * np.log(p / (1 - p)) - 2.0))))


def test_an_unreadable_calibration_file_is_named(tmp_path: Path) -> None:
    assert calibration.read(tmp_path) is None
    (tmp_path / calibration.CALIBRATION_FILE).write_text('{"method": "magic"}')
    with pytest.raises(StorageError, match=r"calibration\.json is unreadable"):
        calibration.read(tmp_path)


def test_a_class_weighted_model_serves_calibrated_scores_by_default(tmp_path: Path) -> None:
    """The demo's config (class_weight balanced) with the default calibration: Platt (few validation
    positives), lower calibration error and Brier score than the raw scores on validation (reported) and
    on the held-out test split, the same ROC AUC, and the served scores are the calibrated ones."""
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["training"].update(epochs=5)
    config = parse_config(data, "test config")
    assert (config.training.class_weight, config.training.calibration) == ("balanced", "auto")
    frame = training_set(config, 6000, 11)
    a, b = int(len(frame) * 0.7), int(len(frame) * 0.85)
    tr, va, te = frame.iloc[:a], frame.iloc[a:b].reset_index(drop=True), frame.iloc[b:].reset_index(drop=True)
    model = train(config, tr, va)
    assert model.calibrator is not None and model.calibrator.method == "platt"
    m = model.metrics
    assert m["calibration_error"] < m["calibration_error_uncalibrated"]  # on validation, before vs after
    assert m["brier_score"] < m["brier_score_uncalibrated"]
    assert 0 < model.threshold < 1
    assert model.predict_raw is not None
    y, raw, served = te["is_fraud"].to_numpy(), model.predict_raw(te), model.predict(te)
    assert calibration_error(y, served) < calibration_error(y, raw) / 2  # on the test split
    assert brier_score(y, served) < brier_score(y, raw)
    assert roc_auc_score(y, served) == roc_auc_score(y, raw)

    files = export(model, tmp_path / "m")
    assert calibration.CALIBRATION_FILE in files  # checksummed like the other files
    offline = load_exported(tmp_path / "m")(te)
    np.testing.assert_allclose(offline, model.predict(te), rtol=1e-6)
    assert roc_auc_score(te["is_fraud"], offline) > 0.8

    card = {"version": "v1", "threshold": model.threshold, "framework": "pytorch", "task": "binary"}
    (tmp_path / "m" / CARD_FILE).write_text(json.dumps(card))
    loaded = load_model_dir(tmp_path / "m")
    cols = model.preprocessor.numeric + model.preprocessor.categorical
    columns = {c: _column(te[c]) for c in cols}
    served, labels = loaded.score(columns, len(te))
    np.testing.assert_allclose(served, offline.astype(np.float32), rtol=1e-5, atol=1e-6)
    assert labels is not None and (labels == (served >= model.threshold)).all()


def _column(values: pd.Series) -> np.ndarray:
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)
    return values.to_numpy(dtype=np.float64, na_value=np.nan)
