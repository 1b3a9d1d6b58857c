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
    if target.metric == "cost":
        return _least_cost(y, p, target.cost_fp, target.cost_fn)
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if len(thresholds) == 0:
        return 0.5
    if target.metric == "f_beta":
        b2 = target.beta**2
        f = (1 + b2) * precision * recall / np.maximum(b2 * precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f))])
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


def _least_cost(y: np.ndarray, p: np.ndarray, cost_fp: float, cost_fn: float) -> float:
    """The threshold with the least ``cost_fp`` * FP + ``cost_fn`` * FN on validation (flagging nothing is
    a candidate too: a threshold just above every score)."""
    y = np.asarray(y).astype(int)
    fpr, tpr, thresholds = roc_curve(y, p)
    positives, negatives = int(y.sum()), len(y) - int(y.sum())
    cost = cost_fp * fpr * negatives + cost_fn * (1 - tpr) * positives
    pick = int(np.argmin(cost))  # first (highest threshold) on ties: fewer rows flagged
    return float(min(thresholds[pick], np.nextafter(float(np.max(p)), np.inf)))


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


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between probability and label (0 is perfect)."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def uncalibrated(y: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    """Calibration error and Brier score of the raw (uncalibrated) scores: "before", beside ``evaluate``'s
    "after" (``calibration_error``, ``brier_score``) of a calibrated model."""
    y = np.asarray(y).astype(int)
    raw = np.asarray(raw, dtype=np.float64)
    return {
        "calibration_error_uncalibrated": calibration_error(y, raw),
        "brier_score_uncalibrated": brier_score(y, raw),
    }


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Threshold-free and thresholded metrics of probabilities ``p`` against labels ``y``. Ranking metrics
    read ``p`` as it is: clipping (for log loss only) would tie the scores it clips."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "calibration_error": calibration_error(y, p),
        "brier_score": brier_score(y, p),
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


def evaluate_regression(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of predictions ``p`` against numeric labels ``y`` (R² is NaN for a constant ``y``)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    error = p - y
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / total if total > 0 else float("nan"),
        "label_mean": float(y.mean()),
        "rows": len(y),
    }


def evaluate_multiclass(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1, log loss and ROC AUC per class (one vs rest) and their macro mean, of class
    probabilities ``p`` [n, k] against class indices ``y`` (-1: a class training never saw, always wrong;
    left out of log loss and AUC, which need a known class)."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    known = y >= 0
    labels = list(range(len(classes)))
    out: dict[str, float] = {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y[known], p[known], labels=labels)) if known.any() else float("nan"),
    }
    aucs = []
    for k, name in enumerate(classes):
        hit = (y[known] == k).astype(int)
        auc = float(roc_auc_score(hit, p[known, k])) if 0 < hit.sum() < len(hit) else float("nan")
        out[f"roc_auc_{name}"] = auc
        aucs.append(auc)
    out["roc_auc_macro"] = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan")
    return {**out, "unseen_class_rows": int((~known).sum()), "rows": len(y)}


def multiclass_curves(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict:
    """The confusion matrix (rows: true class, columns: predicted) for KFP ClassificationMetrics; rows of a
    class training never saw are left out (they have no row)."""
    y = np.asarray(y).astype(int)
    known = y >= 0
    labels = list(range(len(classes)))
    matrix = confusion_matrix(y[known], np.asarray(p)[known].argmax(axis=1), labels=labels)
    return {"classes": list(classes), "confusion_matrix": matrix.tolist()}


def score(
    task: str, y: np.ndarray, p: np.ndarray, threshold: float, classes: list[str] | None = None
) -> dict[str, float]:
    """The metrics of ``task``: thresholded classification metrics, regression errors, or multiclass ones
    (``y`` as class indices of ``classes``)."""
    if task == "multiclass":
        return evaluate_multiclass(y, p, classes or [])
    return evaluate_regression(y, p) if task == "regression" else evaluate(y, p, threshold)
