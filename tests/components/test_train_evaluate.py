"""Train + evaluate through the registry: the gate promotes a better model and rejects a worse one,
scored on the same test split; cards carry lineage; a corrupted champion is detected; a champion promoted
by hand (no gate decision) is handled. The label column is nullable and some labels are missing, as when
labels arrive late: those rows never reach training."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from kfloop import lake
from kfloop.cli.summary import model_table
from kfloop.components.evaluate import decision_markdown, evaluate_and_gate
from kfloop.components.train import train_and_register
from kfloop.demo import DemoSpec, generate
from kfloop.errors import KfloopError
from kfloop.layout import SPLITS, clean_dataset
from kfloop.registry import ModelRegistry
from kfloop.registry.store import CorruptModelError
from kfloop.training.sets import latest_training_set, load_split
from kfloop.training.trainer import export, train
from tests.feature_repo.harness import Loop, sqlite_backend

UNLABELED = 211  # rows of the module's data whose label is not known (yet)


def _relaxed(data: dict) -> None:
    data["training"]["epochs"] = 8
    data["training"]["gate"] = {"min_roc_auc": 0.6, "min_pr_auc": 0.02, "compare_metric": "pr_auc", "tolerance": 0.01}
    data["contract"]["columns"]["is_fraud"]["nullable"] = True  # labels arrive late
    data["contract"]["completeness"]["columns"] = ["customer_id", "merchant_id", "event_timestamp"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("train")
    lp = Loop.create(root / "ws", sqlite_backend(), _relaxed)
    frame = generate(DemoSpec(rows=8000, seed=13)).frame
    frame["is_fraud"] = frame["is_fraud"].astype("Int64")
    frame.loc[frame.sample(n=UNLABELED, random_state=3).index, "is_fraud"] = pd.NA
    lp.load(frame)
    lp.training_set()
    return lp


def _register_shuffled(loop: Loop) -> str:
    """A worse model: the same trainer on labels shuffled within the training split (no signal)."""
    cfg, storage = loop.config, loop.storage
    manifest = latest_training_set(cfg, storage)
    tr, va = load_split(storage, manifest, "train"), load_split(storage, manifest, "validation")
    label = cfg.source.label_column
    tr[label] = tr[label].sample(frac=1.0, random_state=1).to_numpy()
    model = train(cfg, tr, va)
    card = {
        "framework": cfg.training.framework,
        "threshold": model.threshold,
        "metrics": {},
        "training_set": {"content_hash": "shuffled"},
        "hyperparameters": {},
        "feature_service": {"name": manifest["feature_service"], "version": manifest["feature_service_version"]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        export(model, Path(tmp))
        return ModelRegistry(storage, cfg.training.model_name).register(Path(tmp), card).version


def test_gate_promotes_better_and_rejects_worse_on_the_same_test_split(loop: Loop) -> None:
    reg = ModelRegistry(loop.storage, loop.config.training.model_name)
    poor = _register_shuffled(loop)
    reg.promote(poor, "a poor champion to beat")
    card = train_and_register(loop.config, loop.storage, pipeline_run="run-1")
    good = card["version"]
    decision = evaluate_and_gate(loop.config, loop.storage, good)
    assert decision["promoted"], decision["reasons"]
    assert decision["champion"]["version"] == poor
    assert decision["candidate"]["pr_auc"] > decision["champion"]["pr_auc"]
    assert decision["candidate"]["rows"] == decision["champion"]["rows"] == decision["test_split"]["rows"]
    assert reg.champion().version == good  # type: ignore[union-attr]

    worse = _register_shuffled(loop)
    decision = evaluate_and_gate(loop.config, loop.storage, worse)
    assert not decision["promoted"]
    assert any("worse than the champion" in r or "below the minimum" in r for r in decision["reasons"])
    assert reg.champion().version == good  # type: ignore[union-attr]
    recorded = json.loads(loop.storage.read_text(f"registry/{reg.model}/{worse}/decision.json"))
    assert recorded["reasons"] == decision["reasons"]
    assert reg.get(worse).stage == "rejected"  # rejected candidates do not linger as candidates, nor pass as archived
    assert reg.history()[-1]["event"] == "rejected"


def test_unlabeled_rows_never_reach_training(loop: Loop) -> None:
    manifest = latest_training_set(loop.config, loop.storage)
    clean_rows = len(loop.clean())
    assert loop.clean()["is_fraud"].isna().sum() == manifest["unlabeled_rows_dropped"] == UNLABELED
    assert sum(manifest["rows"].values()) == clean_rows - UNLABELED
    for split in SPLITS:
        labels = load_split(loop.storage, manifest, split)["is_fraud"]
        assert labels.dtype == "int64" and set(labels) <= {0, 1}
    card = train_and_register(loop.config, loop.storage, pipeline_run="run-labels")  # trained (or reused)
    assert card["training_set"]["rows"] == manifest["rows"] and card["metrics"]["validation"]["roc_auc"] > 0.5


def test_card_records_lineage_and_retraining_unchanged_data_is_idempotent(loop: Loop) -> None:
    card = train_and_register(loop.config, loop.storage, pipeline_run="run-2")
    manifest = latest_training_set(loop.config, loop.storage)
    assert card["training_set"]["content_hash"] == manifest["content_hash"]
    assert card["feature_service"] == {"name": "fraud_features", "version": manifest["feature_service_version"]}
    # the report of the validate run that made the clean data, not the moving latest.json
    clean = lake.read_manifest(loop.storage, clean_dataset(loop.config.source.dataset))
    assert clean is not None
    report = card["lineage"]["quality_report"]
    assert report == clean.runs[-1]["report"] == f"reports/transactions/quality/{clean.runs[-1]['run_id']}.json"
    checks = json.loads(loop.storage.read_text(report))["checks"]
    canonical = json.dumps(loop.config.contract.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert card["lineage"]["contract"] == {
        "hash": hashlib.sha256(canonical.encode()).hexdigest(),
        "checks": len(checks),
        "schema_hash": clean.schema_hash,
    }
    assert len(checks) > 5
    loop.validate()  # validated again: latest.json moves on, the card's report stays its own
    latest = json.loads(loop.storage.read_text("reports/transactions/quality/latest.json"))
    assert not report.endswith(f"/{latest['run_id']}.json") and loop.storage.read_text(report)
    assert card["features"]["categorical"] == ["channel", "merchant_category"]
    assert set(card["files"]) >= {"preprocess.json"}
    again = train_and_register(loop.config, loop.storage, pipeline_run="run-3")
    assert again.get("reused") and again["version"] == card["version"]


def test_class_weighted_scores_are_served_calibrated_and_calibration_is_reported_before_and_after(
    loop: Loop,
) -> None:
    """class_weight balanced with the default calibration (auto: Platt, validation has far fewer than 1000
    positives): the export carries calibration.json, and the card (validation), the gate decision and the
    run summary (test) hold calibration error and Brier score of the raw scores (_uncalibrated) and the
    served ones, which are lower."""
    assert (loop.config.training.class_weight, loop.config.training.calibration) == ("balanced", "auto")
    card = train_and_register(loop.config, loop.storage, pipeline_run="run-4")  # reused when trained already
    assert card["calibration"] == {"setting": "auto", "method": "platt"}
    assert "calibration.json" in card["files"]
    val = card["metrics"]["validation"]
    assert val["calibration_error"] < val["calibration_error_uncalibrated"] / 2
    assert val["brier_score"] < val["brier_score_uncalibrated"]
    test = evaluate_and_gate(loop.config, loop.storage, card["version"])["candidate"]
    assert test["calibration_error"] < test["calibration_error_uncalibrated"] / 2
    assert test["brier_score"] < test["brier_score_uncalibrated"]
    decision = {"version": card["version"], "promoted": True, "reasons": ["r"], "candidate": test, "champion": None}
    assert f"| calibration_error_uncalibrated | {test['calibration_error_uncalibrated']:.4f} | - |" in (
        decision_markdown(decision)
    )
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(model_table(card, decision, card["version"]))  # the summary `kfloop run` prints
    shown = console.export_text()
    assert f"calibration error {test['calibration_error_uncalibrated']:.4f} → {test['calibration_error']:.4f}" in shown


def test_corrupted_champion_is_detected_and_cannot_be_promoted(loop: Loop) -> None:
    reg = ModelRegistry(loop.storage, loop.config.training.model_name)
    champion = reg.champion()
    assert champion is not None
    weights = next(k for k in champion.card["files"] if k != "preprocess.json")
    key = f"registry/{reg.model}/{champion.version}/{weights}"
    original = loop.storage.read_bytes(key)
    loop.storage.write_bytes(key, original[:-10] + b"0123456789")
    try:
        candidate = _register_shuffled(loop)
        decision = evaluate_and_gate(loop.config, loop.storage, candidate)
        assert any(
            f"champion {champion.version} is unusable" in r and "checksum mismatch" in r for r in decision["reasons"]
        )
        assert decision["champion"] is None  # judged on the minimums alone
        with pytest.raises(CorruptModelError, match="checksum mismatch"):
            reg.promote(champion.version, "by hand")
    finally:
        loop.storage.write_bytes(key, original)


def test_changed_feature_service_makes_the_champion_incomparable(loop: Loop) -> None:
    reg = ModelRegistry(loop.storage, loop.config.training.model_name)
    champion = reg.champion()
    assert champion is not None
    card_key = f"registry/{reg.model}/{champion.version}/model.json"
    original = loop.storage.read_text(card_key)
    card = json.loads(original)
    card["feature_service"]["version"] = "older"
    loop.storage.write_text(card_key, json.dumps(card))
    try:
        decision = evaluate_and_gate(loop.config, loop.storage, _register_shuffled(loop))
        assert any("feature service version older" in r for r in decision["reasons"])
    finally:
        loop.storage.write_text(card_key, original)


def test_a_champion_promoted_by_hand_without_a_decision_is_evaluated(loop: Loop) -> None:
    """``kfloop models promote`` writes no decision.json: evaluating that version (training reused it) must
    score it and say why it was not gated, not fail reading the missing file."""
    reg = ModelRegistry(loop.storage, loop.config.training.model_name)
    before = reg.champion()
    by_hand = _register_shuffled(loop)
    reg.promote(by_hand, "promoted by hand")
    assert not loop.storage.exists(f"registry/{reg.model}/{by_hand}/decision.json")
    try:
        decision = evaluate_and_gate(loop.config, loop.storage, by_hand)
        assert (decision["version"], decision["champion_after"], decision["promoted"]) == (by_hand, by_hand, True)
        assert decision["reused"] and decision["champion"] is None
        assert decision["reasons"] == [
            f"{by_hand} is the champion already without a gate decision (promoted: 'promoted by hand'), e.g. by "
            "`kfloop models promote`: scored on the newest test split, not gated again"
        ]
        assert decision["candidate"]["rows"] == decision["test_split"]["rows"] > 0
        assert len(decision["curves"]["fpr"]) == len(decision["curves"]["tpr"]) > 1
        assert reg.champion().version == by_hand  # type: ignore[union-attr]
        assert decision_markdown(decision).startswith(f"# Model {by_hand}: **promoted to champion**")
    finally:
        if before is not None:
            reg.promote(before.version, "restore the module's champion")


def test_a_split_with_one_class_fails_clearly_instead_of_judging_on_nan(loop: Loop) -> None:
    """Few labelled rows can leave a split with one class: the threshold, ROC AUC and PR AUC are then undefined.
    Training says so for the validation split; evaluate says so for the test split and leaves the candidate a
    candidate, rather than archiving it for a "ROC AUC nan below the minimum"."""
    cfg, storage = loop.config, loop.storage
    manifest = latest_training_set(cfg, storage)
    tr, va = load_split(storage, manifest, "train"), load_split(storage, manifest, "validation")
    with pytest.raises(KfloopError, match=r"validation split has only label 0 in its [\d,]+ rows: the threshold"):
        train(cfg, tr, va[va["is_fraud"] == 0])
    reg = ModelRegistry(storage, cfg.training.model_name)
    candidate = _register_shuffled(loop)
    key = f"training_sets/{manifest['feature_service']}/{manifest['run_id']}/test.parquet"
    original = storage.read_bytes(key)
    test = load_split(storage, manifest, "test")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(test[test["is_fraud"] == 0], preserve_index=False), buf)
    storage.write_bytes(key, buf.getvalue())
    try:
        with pytest.raises(KfloopError, match=rf"test split of training set {manifest['run_id']} has only label 0"):
            evaluate_and_gate(cfg, storage, candidate)
        assert reg.get(candidate).stage == "candidate"
        assert not storage.exists(f"registry/{reg.model}/{candidate}/decision.json")
    finally:
        storage.write_bytes(key, original)


def test_a_version_the_gate_rejected_then_promoted_by_hand_stays_champion(loop: Loop) -> None:
    """Its decision.json says "not promoted": evaluating it again (training reused it) must report the champion
    it is, not replay the old rejection, and say that the gate had rejected it."""
    reg = ModelRegistry(loop.storage, loop.config.training.model_name)
    before = reg.champion()
    rejected = _register_shuffled(loop)
    assert not evaluate_and_gate(loop.config, loop.storage, rejected)["promoted"]
    reg.promote(rejected, "overruled the gate")
    try:
        decision = evaluate_and_gate(loop.config, loop.storage, rejected)
        assert (decision["promoted"], decision["champion_after"], decision["reused"]) == (True, rejected, True)
        assert decision["reasons"][0].startswith(
            f"{rejected} is the champion already although the gate did not promote it (promoted: 'overruled the gate')"
        )
        assert reg.champion().version == rejected  # type: ignore[union-attr]
    finally:
        if before is not None:
            reg.promote(before.version, "restore the module's champion")
