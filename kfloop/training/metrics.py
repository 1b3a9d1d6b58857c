"""Evaluation metrics and the decision threshold, shared by both trainers and the evaluate stage."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from kfloop.config import ThresholdTarget


def choose_threshold(y: np.ndarray, p: np.ndarray, target: ThresholdTarget) -> float:
    """On validation: the threshold with the best precision whose recall meets the target (or the best
    recall whose precision meets it). Falls back to the best-F1 threshold when the target is unreachable."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if len(thresholds) == 0:
        return 0.5
    if target.metric == "recall":
        ok = recall >= target.target
        pick = np.argmax(np.where(ok, precision, -1.0)) if ok.any() else None
    else:
        ok = precision >= target.target
        pick = np.argmax(np.where(ok, recall, -1.0)) if ok.any() else None
    if pick is None:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        pick = int(np.argmax(f1))
    return float(thresholds[pick])


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Threshold-free and thresholded metrics of probabilities ``p`` against labels ``y``."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "calibration_error": calibration_error(y, p),
        "threshold": float(threshold),
        "positives": int(y.sum()),
        "rows": len(y),
    }


def curves(y: np.ndarray, p: np.ndarray, threshold: float, points: int = 50) -> dict:
    """ROC curve (thinned to ``points``) and confusion matrix, for KFP ClassificationMetrics."""
    fpr, tpr, thr = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).astype(int))
    matrix = confusion_matrix(np.asarray(y).astype(int), (np.asarray(p) >= threshold).astype(int), labels=[0, 1])
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "thresholds": np.nan_to_num(thr[keep], posinf=1.0).tolist(),
        "confusion_matrix": matrix.tolist(),
    }
