"""Evaluate stage: the candidate and the champion on the same, newest test split → the promotion gate.

A candidate is promoted only if it meets the configured minimums and is not worse than the current
champion by more than the tolerance. The decision and its reasons are recorded beside the version
(``decision.json``) and in the registry history.

A champion need not have a decision: ``kfloop models promote`` makes one by hand. When training reused
such a version (same data, same settings), it is scored on the newest test split and reported as the
champion it is, without being gated again. A reused version the gate rejected is not judged again while
nothing the judgement rests on changed (test split content, gate, champion): its recorded decision is
returned, marked ``reused``, and the registry is left as it is.
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from kfloop import layout
from kfloop.config import Config, PromotionGate
from kfloop.config.training import COMPARABLE
from kfloop.errors import CorruptModelError, KfloopError
from kfloop.lineage.run import emits
from kfloop.registry import ModelRegistry, ModelVersion
from kfloop.storage import Storage
from kfloop.training import calibration, classes
from kfloop.training.metrics import curves, multiclass_curves, score, uncalibrated
from kfloop.training.sets import latest_training_set, load_split


def _score(registry: ModelRegistry, mv: ModelVersion, test, label: str) -> tuple[dict, np.ndarray]:
    """The metrics of ``mv`` on the test split from its served (calibrated) scores, and those scores; a
    calibrated model's metrics also hold the raw scores' calibration error and Brier score (``_uncalibrated``)."""
    from kfloop.training.trainer import load_exported

    with tempfile.TemporaryDirectory(prefix="kfloop-eval-") as tmp:
        directory = registry.fetch(mv.version, Path(tmp))
        raw = load_exported(directory, calibrated=False)(test)
        calibrator = calibration.read(directory)
    p = raw if calibrator is None else calibrator.apply(raw)
    y = labels_of(mv.card, test[label])
    metrics = score(task_of(mv.card), y, p, float(mv.card["threshold"]), mv.card.get("classes"))
    if calibrator is not None and task_of(mv.card) == "binary":
        metrics.update(uncalibrated(y, raw))
    return metrics, p


def labels_of(card: dict, labels) -> np.ndarray:
    """Test labels as the model's metrics take them: class indices for a multiclass model, else as stored."""
    vocab = card.get("classes")
    return classes.indices(labels, vocab) if vocab else labels.to_numpy()


def _curves(card: dict, y: np.ndarray, p: np.ndarray) -> dict | None:
    """ROC curve and confusion matrix (binary), the confusion matrix (multiclass), none (regression)."""
    task = task_of(card)
    if task == "multiclass":
        return multiclass_curves(y, p, card["classes"])
    return curves(y, p, float(card["threshold"])) if task == "binary" else None


def task_of(card: dict) -> str:
    """The task a registered model was trained for (cards from before tasks are binary)."""
    return str(card.get("task", "binary"))


def _champion_metrics(
    registry: ModelRegistry, current: ModelVersion | None, manifest: dict, test, label: str
) -> tuple[dict | None, list[str]]:
    """The champion's metrics on the same test split, or None with the reason it cannot be compared."""
    if current is None:
        return None, []
    version = current.card.get("feature_service", {}).get("version")
    if version != manifest["feature_service_version"]:
        return None, [
            f"champion {current.version} was trained on feature service version {version}, the test "
            f"split has {manifest['feature_service_version']}: not comparable, judged on minimums"
        ]
    try:
        metrics, _ = _score(registry, current, test, label)
    except CorruptModelError as err:
        return None, [f"champion {current.version} is unusable ({err}): judged on minimums"]
    return metrics, []


def gate(config: Config, candidate: dict, champion: dict | None) -> tuple[bool, list[str]]:
    """The promotion rule; returns (promote, reasons)."""
    g, task = config.training.gate, config.training.task
    metric = g.compared(task)
    reasons = _regression_limits(g, candidate) if task == "regression" else []
    if task == "multiclass" and not candidate["macro_f1"] >= g.min_macro_f1:
        reasons.append(f"macro-F1 {candidate['macro_f1']:.4f} is below the minimum {g.min_macro_f1}")
    if task == "binary":
        if not candidate["roc_auc"] >= g.min_roc_auc:
            reasons.append(f"ROC AUC {candidate['roc_auc']:.4f} is below the minimum {g.min_roc_auc}")
        if not candidate["pr_auc"] >= g.min_pr_auc:
            reasons.append(f"PR AUC {candidate['pr_auc']:.4f} is below the minimum {g.min_pr_auc}")
    if champion is not None:
        ours, theirs = candidate[metric], champion[metric]
        worse = ours > theirs + g.tolerance if not COMPARABLE[task][metric] else ours < theirs - g.tolerance
        if worse:
            reasons.append(
                f"{metric} {ours:.4f} is worse than the champion's {theirs:.4f} by more than "
                f"the tolerance {g.tolerance}"
            )
    if reasons:
        return False, reasons
    if champion is None:
        return True, ["meets the minimums; there is no champion yet"]
    return True, [
        f"meets the minimums and {metric} {candidate[metric]:.4f} is within "
        f"{g.tolerance} of (or better than) the champion's {champion[metric]:.4f}"
    ]


def _regression_limits(g: PromotionGate, candidate: dict) -> list[str]:
    """The regression gate's absolute limits (a NaN never passes)."""
    reasons = []
    for key, name, limit in (("rmse", "RMSE", g.max_rmse), ("mae", "MAE", g.max_mae)):
        if limit is not None and not candidate[key] <= limit:
            reasons.append(f"{name} {candidate[key]:.4f} is above the maximum {limit}")
    if g.min_r2 is not None and not candidate["r2"] >= g.min_r2:
        reasons.append(f"R² {candidate['r2']:.4f} is below the minimum {g.min_r2}")
    return reasons


@emits("evaluate")
def evaluate_and_gate(config: Config, storage: Storage, version: str) -> dict:
    """Score candidate and champion on the newest test split, decide, promote if the gate passes."""
    registry = ModelRegistry(storage, config.training.model_name)
    current = registry.champion()
    recorded = _recorded_decision(storage, registry, version)
    champion_now = current is not None and current.version == version  # a reused model that is champion already
    if champion_now and recorded is not None and recorded.get("promoted") is True:
        return {**recorded, "champion_after": version, "reused": True}
    manifest = latest_training_set(config, storage)
    if recorded is not None and _replayable(config, recorded, manifest, current):
        return {**recorded, "champion_after": current.version if current else None, "reused": True}
    test = load_split(storage, manifest, "test")
    label = config.source.label_column
    candidate = registry.get(version)
    by_hand = champion_now
    binary = task_of(candidate.card) == "binary"
    if binary and not by_hand and test[label].nunique() < 2:  # ROC/PR AUC undefined: a gate on NaN would reject it
        only = f"only label {int(test[label].iloc[0])}" if len(test) else "no rows"
        raise KfloopError(
            f"test split of training set {manifest['run_id']} has {only} in its {len(test):,} rows: ROC AUC and "
            f"PR AUC need both classes, so {version} cannot be judged (more labelled data, or other "
            "features.splits); it stays a candidate"
        )
    cand_metrics, p = _score(registry, candidate, test, label)
    if by_hand:  # promoted by hand: nothing to gate
        rejected = recorded is not None and recorded.get("promoted") is False
        y = labels_of(candidate.card, test[label])
        return _champion_by_hand(registry, candidate, cand_metrics, manifest, y, p, rejected)
    champ_metrics, notes = _champion_metrics(registry, current, manifest, test, label)
    promote, reasons = gate(config, cand_metrics, champ_metrics)
    reasons = notes + reasons
    decision = {
        "version": version,
        "promoted": promote,
        "reasons": reasons,
        "candidate": cand_metrics,
        "champion": {"version": current.version, **champ_metrics} if current and champ_metrics else None,
        "test_split": {"training_set": manifest["run_id"], "rows": len(test), "content_hash": manifest["content_hash"]},
        "curves": _curves(candidate.card, labels_of(candidate.card, test[label]), p),
        "gate": config.training.gate.record(config.training.task),
        "champion_before": current.version if current else None,
    }
    storage.write_text(layout.decision_key(registry.model, version), json.dumps(decision, indent=2))
    if promote and (current is None or current.version != version):
        registry.promote(version, "; ".join(reasons))
    elif not promote:
        registry.reject(version, "; ".join(reasons))
    champion = registry.champion()
    decision["champion_after"] = champion.version if champion else None
    return decision


def _replayable(config: Config, recorded: dict, manifest: dict, current: ModelVersion | None) -> bool:
    """Whether ``recorded`` rejected this version by the same gate, on a test split of the same content,
    against the same champion: scoring is deterministic, so judging again would give the same answer.

    A promotion is never replayed: a promoted version that is not champion now was replaced or rolled back
    since, and is judged again like any candidate."""
    champion = current.version if current else None
    return (
        recorded.get("promoted") is False
        and champion != recorded.get("version")  # rejected, then promoted by hand: reported as the champion
        and recorded.get("champion_before", "") == champion
        and recorded.get("gate") == config.training.gate.record(config.training.task)
        and recorded.get("test_split", {}).get("content_hash") == manifest["content_hash"]
    )


def _recorded_decision(storage: Storage, registry: ModelRegistry, version: str) -> dict | None:
    """The gate decision recorded beside ``version``, or None (promoted by hand, or unreadable)."""
    try:
        recorded = json.loads(storage.read_text(layout.decision_key(registry.model, version)))
    except (FileNotFoundError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _champion_by_hand(
    registry: ModelRegistry,
    champion: ModelVersion,
    metrics: dict,
    manifest: dict,
    y: np.ndarray,
    p: np.ndarray,
    rejected: bool = False,
) -> dict:
    """The outcome for a reused champion that no gate promoted: its test metrics, and why it was not gated.

    Nothing is written: ``decision.json`` stays the record of a gate, and a hand promotion is recorded in
    the registry history already.
    """
    version = champion.version
    how = next(
        (h.get("reason") for h in reversed(registry.history()) if h.get("version") == version and "reason" in h),
        None,
    )
    note = f" (promoted: {how!r})" if how else ""
    return {
        "version": version,
        "promoted": True,
        "reasons": [
            f"{version} is the champion already "
            + ("although the gate did not promote it" if rejected else "without a gate decision")
            + f"{note}, e.g. by `kfloop models promote`: scored on the newest test split, not gated again"
        ],
        "candidate": metrics,
        "champion": None,
        "test_split": {"training_set": manifest["run_id"], "rows": len(y)},
        "curves": _curves(champion.card, y, p),
        "champion_after": version,
        "reused": True,
    }


def metric_keys(metrics: dict) -> tuple[str, ...]:
    """The headline metrics of a task, told apart by the metrics it has."""
    if "rmse" in metrics:
        return ("mae", "rmse", "r2")
    if "macro_f1" in metrics:
        return ("accuracy", "macro_f1", "log_loss", "roc_auc_macro")
    keys = ("roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "calibration_error", "brier_score")
    before = ("calibration_error_uncalibrated", "brier_score_uncalibrated")  # a calibrated model's raw scores
    return keys + tuple(k for k in before if k in metrics)


def decision_markdown(d: dict) -> str:
    """The gate decision for the Kubeflow UI's Markdown viewer."""
    verdict = "**promoted to champion**" if d["promoted"] else "**not promoted**"
    rows = ["| metric | candidate | champion |", "|---|---|---|"]
    for key in metric_keys(d["candidate"]):
        if key not in d["candidate"]:  # a decision recorded before the metric existed
            continue
        value = (d["champion"] or {}).get(key)
        champ = f"{value:.4f}" if value is not None else "-"
        rows.append(f"| {key} | {d['candidate'][key]:.4f} | {champ} |")
    reasons = "\n".join(f"- {r}" for r in d["reasons"])
    return f"# Model {d['version']}: {verdict}\n\n{reasons}\n\n" + "\n".join(rows) + "\n"


def run_evaluate_step(config_json: str, version: str) -> dict:
    """Entrypoint inside the pipeline step."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return evaluate_and_gate(config, storage, version)
