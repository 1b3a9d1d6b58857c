"""Probability calibration of a binary model, fitted on validation and saved beside the export.

Class weighting (``training.class_weight: balanced``) trains the network as if positives were as common as
negatives, so its scores overstate the positive rate. A monotonic map fitted on the validation split (Platt:
a logistic curve over the logit; isotonic: a step function) brings them back to observed frequencies without
changing the ranking. It is a small JSON file (``calibration.json``) applied by ``load_exported`` and by the
predictor alike, so every place that produces scores gives the same calibrated values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kfloop.errors import StorageError
from kfloop.files import atomic_write

CALIBRATION_FILE = "calibration.json"
_EPS = 1e-7


@dataclass(frozen=True)
class Calibrator:
    """``platt``: p' = sigmoid(a * logit(p) + b) with ``params`` [a, b]; ``isotonic``: p' interpolated
    between the fitted points ``x`` -> ``y`` (clipped at both ends)."""

    method: str
    params: tuple[float, ...] = ()
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            a, b = self.params
            return 1.0 / (1.0 + np.exp(-(a * _logit(p) + b)))
        return np.interp(p, self.x, self.y)

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "params": self.params, "x": self.x, "y": self.y}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        d = json.loads(text)
        if d.get("method") not in ("platt", "isotonic"):
            raise ValueError(f"unknown calibration method {d.get('method')!r}")
        return cls(d["method"], tuple(d.get("params", ())), tuple(d.get("x", ())), tuple(d.get("y", ())))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit(method: str, y: np.ndarray, p: np.ndarray) -> Calibrator:
    """The ``method`` map from scores ``p`` to the observed labels ``y`` (validation split)."""
    y = np.asarray(y).astype(int)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6).fit(_logit(np.asarray(p, dtype=np.float64))[:, None], y)
        return Calibrator("platt", (float(model.coef_[0, 0]), float(model.intercept_[0])))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return Calibrator("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))


def write(calibrator: Calibrator, directory: Path) -> Path:
    path = directory / CALIBRATION_FILE
    data = calibrator.to_json().encode()
    atomic_write(path, lambda fh: fh.write(data))
    return path


def read(directory: Path) -> Calibrator | None:
    """The calibration saved with an export, or None when the model is served uncalibrated."""
    path = Path(directory) / CALIBRATION_FILE
    try:
        return Calibrator.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as err:
        raise StorageError(f"exported model {directory}: {CALIBRATION_FILE} is unreadable ({err})") from err
