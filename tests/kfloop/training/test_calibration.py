"""Calibration (``training.calibration``): Platt and isotonic maps fitted on validation lower the
calibration error of class-weighted scores, keep their ranking, are saved with the export (and listed
among its checksums), and are applied alike by ``load_exported`` and by the serving predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.train import training_set
from kfloop.config import load_config, parse_config
from kfloop.errors import StorageError
from kfloop.layout import CARD_FILE
from kfloop.serving.predictor import load_model_dir
from kfloop.training import calibration
from kfloop.training.metrics import calibration_error
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


def test_an_unreadable_calibration_file_is_named(tmp_path: Path) -> None:
    assert calibration.read(tmp_path) is None
    (tmp_path / calibration.CALIBRATION_FILE).write_text('{"method": "magic"}')
    with pytest.raises(StorageError, match=r"calibration\.json is unreadable"):
        calibration.read(tmp_path)


def test_a_calibrated_model_reports_both_errors_and_serves_calibrated_scores(tmp_path: Path) -> None:
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["training"].update(class_weight="balanced", calibration="platt", epochs=5)
    config = parse_config(data, "test config")
    frame = training_set(config, 6000, 11)
    a, b = int(len(frame) * 0.7), int(len(frame) * 0.85)
    tr, va, te = frame.iloc[:a], frame.iloc[a:b].reset_index(drop=True), frame.iloc[b:].reset_index(drop=True)
    model = train(config, tr, va)
    m = model.metrics
    assert m["calibration_error"] < m["calibration_error_uncalibrated"]  # on validation, before vs after
    assert 0 < model.threshold < 1

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
