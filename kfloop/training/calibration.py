"""Probability calibration of a binary model, fitted on validation and saved beside the export.

Class weighting (``training.class_weight: balanced``) trains the network as if positives were as common as
negatives, so its scores overstate the positive rate. A monotonic map fitted on the validation split (Platt:
a logistic curve over the logit; isotonic: a step function) brings them back to observed frequencies without
changing the ranking. It is a small JSON file (``calibration.json``) applied by ``load_exported`` and by the
predictor alike, so every place that produces scores gives the same calibrated values.

The map is strictly increasing, so ranking metrics (ROC AUC, PR AUC) and the threshold's cut are those of the
raw scores and a gate never passes or fails because of calibration:

- Platt's slope is kept non-negative. An unconstrained fit on scores that *fall* as the positive rate rises
  (a model worse than chance on validation) has a negative slope, which would reverse the ranking and turn
  that model into a good one; the constrained fit is the base rate for every score.
- Isotonic regression pools scores into flat steps: ties, which lower ROC AUC and PR AUC.
- Both add ``tie_break`` x p (1e-6): equal raw scores stay equal, different ones stay in order, and the
  probabilities move by at most 1e-6.

``auto`` (``resolve``) picks isotonic only when validation has enough positives and negatives for its steps
to be frequencies rather than noise (``ISOTONIC_MIN_CLASS_ROWS`` of each); Platt's two parameters otherwise.
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
TIE_BREAK = 1e-6  # weight of the raw score in a fitted map: strictly increasing, moves a probability <= 1e-6
ISOTONIC_MIN_CLASS_ROWS = 1000  # auto: isotonic from this many validation rows of each class, else Platt


@dataclass(frozen=True)
class Calibrator:
    """``platt``: p' = sigmoid(a * logit(p) + b) with ``params`` [a, b]; ``isotonic``: p' interpolated
    between the fitted points ``x`` -> ``y`` (clipped at both ends). Either is then blended with the raw
    score, (1 - ``tie_break``) * p' + ``tie_break`` * p, so the map is strictly increasing (files written
    before there was a tie break have 0)."""

    method: str
    params: tuple[float, ...] = ()
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    tie_break: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            a, b = self.params
            q = 1.0 / (1.0 + np.exp(-(a * _logit(p) + b)))
        else:
            q = np.interp(p, self.x, self.y)
        if self.tie_break:
            q = (1.0 - self.tie_break) * q + self.tie_break * np.clip(p, 0.0, 1.0)
        return q

    def to_json(self) -> str:
        body = {"method": self.method, "params": self.params, "x": self.x, "y": self.y, "tie_break": self.tie_break}
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        d = json.loads(text)
        if d.get("method") not in ("platt", "isotonic"):
            raise ValueError(f"unknown calibration method {d.get('method')!r}")
        params, x, y = tuple(d.get("params", ())), tuple(d.get("x", ())), tuple(d.get("y", ()))
        return cls(d["method"], params, x, y, float(d.get("tie_break", 0.0)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def resolve(method: str, class_weight: str, y: np.ndarray) -> str:
    """The calibration fitted for ``training.calibration`` = ``method``: ``auto`` is none without class
    weighting (unweighted scores are frequencies already), else isotonic when validation labels ``y`` hold
    ``ISOTONIC_MIN_CLASS_ROWS`` positives and as many negatives, else Platt."""
    if method != "auto":
        return method
    if class_weight != "balanced":
        return "none"
    positives = int(np.asarray(y).astype(int).sum())
    few = min(positives, len(y) - positives) < ISOTONIC_MIN_CLASS_ROWS
    return "platt" if few else "isotonic"


def fit(method: str, y: np.ndarray, p: np.ndarray) -> Calibrator:
    """The ``method`` map from scores ``p`` to the observed labels ``y`` (validation split), strictly
    increasing (see the module docstring)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if not a > 0:  # scores do not rise with the positive rate: the best non-decreasing fit is the base rate
            rate = float(np.clip(y.mean(), _EPS, 1 - _EPS))
            a, b = 0.0, float(np.log(rate / (1 - rate)))
        return Calibrator("platt", (a, b), tie_break=TIE_BREAK)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    x, fitted = tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_))
    return Calibrator("isotonic", x=x, y=fitted, tie_break=TIE_BREAK)


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
