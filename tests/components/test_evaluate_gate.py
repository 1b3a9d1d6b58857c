"""The promotion rule: minimums, and no regression beyond the tolerance against the champion."""

from __future__ import annotations

from kfloop.components.evaluate import decision_markdown, gate
from kfloop.config import load_config
from tests.conftest import DEMO_CONFIG

CFG = load_config(DEMO_CONFIG)  # gate: min_roc_auc 0.8, min_pr_auc 0.1, pr_auc, tolerance 0.01


def m(roc: float, pr: float) -> dict:
    return {
        "roc_auc": roc,
        "pr_auc": pr,
        "precision": 0.5,
        "recall": 0.8,
        "f1": 0.6,
        "log_loss": 0.1,
        "calibration_error": 0.01,
    }


def test_first_model_meeting_minimums_is_promoted() -> None:
    ok, reasons = gate(CFG, m(0.9, 0.5), None)
    assert ok and "no champion yet" in reasons[0]


def test_minimums_reject_with_reasons() -> None:
    ok, reasons = gate(CFG, m(0.7, 0.05), None)
    assert not ok
    assert reasons == ["ROC AUC 0.7000 is below the minimum 0.8", "PR AUC 0.0500 is below the minimum 0.1"]


def test_better_or_slightly_worse_than_champion_is_promoted_worse_is_not() -> None:
    assert gate(CFG, m(0.92, 0.60), m(0.9, 0.55))[0]
    assert gate(CFG, m(0.92, 0.545), m(0.9, 0.55))[0]  # within the 0.01 tolerance
    ok, reasons = gate(CFG, m(0.92, 0.50), m(0.9, 0.55))
    assert not ok and "pr_auc 0.5000 is worse than the champion's 0.5500" in reasons[0]


def test_nan_metrics_never_pass() -> None:
    assert not gate(CFG, m(float("nan"), float("nan")), None)[0]


def test_decision_markdown_names_both_models() -> None:
    d = {
        "version": "v2",
        "promoted": False,
        "reasons": ["worse"],
        "candidate": m(0.9, 0.5),
        "champion": {"version": "v1", **m(0.91, 0.6)},
    }
    text = decision_markdown(d)
    assert "v2" in text and "not promoted" in text and "| pr_auc | 0.5000 | 0.6000 |" in text
