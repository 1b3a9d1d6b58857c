"""Reproducible runs: the stages run twice on identical inputs give a byte-identical training set, the same
model version (reused, not trained again) with the same metrics, and the same gate decision. The same rows in
another file order, with most rows sharing their timestamp with others, give the same training-set bytes, and
a model trained on them from scratch gives the same metrics, bit for bit (training is seeded, CPU-deterministic).
A reused version the gate rejected keeps its recorded decision until the gate itself changes."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import pandas as pd
import pytest
from rich.console import Console

from kfloop.cli.summary import model_table
from kfloop.components.evaluate import evaluate_and_gate
from kfloop.components.train import train_and_register
from kfloop.components.training_set import TrainingSet, split_by_time
from kfloop.demo import DemoSpec, generate
from kfloop.layout import SPLITS, decision_key, split_key
from kfloop.registry import ModelRegistry
from tests.feature_repo.harness import Loop, sqlite_backend

RELAXED = {"min_roc_auc": 0.6, "min_pr_auc": 0.02, "compare_metric": "pr_auc", "tolerance": 0.01}
STRICT = {**RELAXED, "min_roc_auc": 0.9999}  # no model of this data meets it


def _settings(data: dict) -> None:
    data["training"]["epochs"] = 4
    data["training"]["gate"] = RELAXED


@dataclass
class Run:
    """What one pass of the stages produced."""

    training_set: TrainingSet
    split_bytes: dict[str, bytes]
    card: dict
    decision: dict


def run_stages(loop: Loop, frame: pd.DataFrame, run: str) -> Run:
    """ingest → validate → features → training set → train → evaluate, as `kfloop run` orders them."""
    loop.load(frame)
    result = loop.training_set()
    service = loop.config.features.service
    split_bytes = {name: loop.storage.read_bytes(split_key(service, result.run_id, name)) for name in SPLITS}
    card = train_and_register(loop.config, loop.storage, pipeline_run=run)
    return Run(result, split_bytes, card, evaluate_and_gate(loop.config, loop.storage, card["version"]))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Demo transactions on a 6-hour grid: nearly every row shares its timestamp with others. Some labels are
    flipped, so no model scores perfectly and equal metrics mean something."""
    data = generate(DemoSpec(rows=3000, seed=17)).frame
    data["event_timestamp"] = data["event_timestamp"].dt.floor("6h")
    flip = data.sample(frac=0.005, random_state=4).index
    data.loc[flip, "is_fraud"] = 1 - data.loc[flip, "is_fraud"]
    assert data["event_timestamp"].duplicated().mean() > 0.8
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame) -> dict:
    """Workspace a: the stages twice on the same rows; workspace b: once, on the same rows shuffled."""
    root = tmp_path_factory.mktemp("reproducible")
    a = Loop.create(root / "a", sqlite_backend(), _settings)
    first, second = run_stages(a, frame, "run-1"), run_stages(a, frame, "run-2")
    versions = [v.version for v in ModelRegistry(a.storage, a.config.training.model_name).list()]
    b = Loop.create(root / "b", sqlite_backend(), _settings)
    shuffled = run_stages(b, frame.sample(frac=1.0, random_state=5).reset_index(drop=True), "run-b")
    return {"first": first, "second": second, "shuffled": shuffled, "loop": a, "versions": versions}


def test_split_by_time_orders_ties_by_key_then_by_every_column() -> None:
    """Rows sharing a time, in any order, come out in one order, and a cut inside a tie falls the same way."""
    t0, t1 = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02", tz="UTC")
    frame = pd.DataFrame(
        {
            "customer_id": ["c2", "c1", "c1", "c3", "c1", "c2", "c1"],
            "event_timestamp": [t1, t1, t1, t0, t1, t1, t1],
            "amount": [5.0, None, 2.0, 9.0, 2.0, 1.0, 3.0],
            "is_fraud": [0, 1, 0, 0, 1, 0, 0],
        }
    )
    fractions = (0.5, 0.25, 0.25)  # train 3 rows, validation 1, test 3: both cuts fall among the t1 ties
    want = split_by_time(frame, "event_timestamp", fractions, ["customer_id"])
    for seed in range(5):
        got = split_by_time(frame.sample(frac=1.0, random_state=seed), "event_timestamp", fractions, ["customer_id"])
        for name in SPLITS:
            pd.testing.assert_frame_equal(got[name].reset_index(drop=True), want[name].reset_index(drop=True))
    assert [len(want[name]) for name in SPLITS] == [3, 1, 3]
    rows = pd.concat(want.values())
    assert rows["customer_id"].tolist() == ["c3", "c1", "c1", "c1", "c1", "c2", "c2"]
    assert rows["amount"].tolist()[:4] == [9.0, 2.0, 2.0, 3.0] and pd.isna(rows["amount"].iloc[4])  # NaN last
    assert rows["is_fraud"].tolist() == [0, 0, 1, 0, 1, 0, 0]  # equal time, key and amount: the label decides


def test_identical_inputs_give_a_byte_identical_training_set(runs: dict) -> None:
    first, second = runs["first"], runs["second"]
    assert first.training_set.run_id != second.training_set.run_id  # a new training set, the same bytes
    assert first.split_bytes == second.split_bytes
    assert first.training_set.content_hash == second.training_set.content_hash


def test_the_same_rows_in_another_file_order_give_the_same_training_set_bytes(runs: dict) -> None:
    first, shuffled = runs["first"], runs["shuffled"]
    assert shuffled.split_bytes == first.split_bytes
    assert shuffled.training_set.content_hash == first.training_set.content_hash
    assert shuffled.training_set.rows == first.training_set.rows


def test_identical_inputs_reuse_the_version_and_its_gate_decision(runs: dict) -> None:
    first, second = runs["first"], runs["second"]
    assert "reused" not in first.card and second.card["reused"] is True
    assert second.card["version"] == first.card["version"] == "v1"
    assert second.card["identity"] == first.card["identity"]
    assert set(first.card["identity"]) == {"key", "code"} and "torch" in first.card["identity"]["code"]
    assert second.card["metrics"] == first.card["metrics"] and second.card["threshold"] == first.card["threshold"]
    assert runs["versions"] == ["v1"]  # after both runs of workspace a
    assert first.decision["promoted"] and second.decision["reused"]
    assert 0.6 < first.decision["candidate"]["roc_auc"] < 1 and 0 < first.card["metrics"]["validation"]["f1"] < 1
    assert {k: v for k, v in second.decision.items() if k != "reused"} == first.decision
    # what a later replay is checked against: the gate, the champion it was judged against, the test split
    assert first.decision["gate"] == RELAXED and first.decision["champion_before"] is None
    assert first.decision["test_split"]["content_hash"] == first.training_set.content_hash
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(model_table(second.card, second.decision, "v1"))  # the run summary `kfloop run` prints
    key = first.card["identity"]["key"][:12]
    shown = rf"│ reused +│ not trained again: same training set, settings and code \(identity {key}\)"
    assert re.search(shown, console.export_text())
    console.print(model_table(first.card, first.decision, "v1"))
    assert console.export_text().count("not trained again") == 0  # export_text clears: the first run trained


def test_a_model_trained_again_on_the_same_bytes_has_the_same_metrics_and_decision(runs: dict) -> None:
    """Workspace b has no registered version to reuse: it trains, and gets the same model as workspace a."""
    first, shuffled = runs["first"], runs["shuffled"]
    assert "reused" not in shuffled.card
    assert shuffled.card["identity"] == first.card["identity"]
    for key in ("metrics", "threshold", "history", "features"):
        assert shuffled.card[key] == first.card[key], key
    mine, theirs = dict(shuffled.decision), dict(first.decision)
    for d in (mine, theirs):
        d["test_split"] = {k: v for k, v in d["test_split"].items() if k != "training_set"}  # its run id
    assert mine == theirs


def test_a_rejected_version_is_reused_with_its_recorded_decision_until_the_gate_changes(runs: dict) -> None:
    loop: Loop = runs["loop"]  # champion v1 (promoted above)
    registry = ModelRegistry(loop.storage, loop.config.training.model_name)

    def strict(data: dict) -> None:
        _settings(data)
        data["training"]["seed"] = 7  # another model, v2
        data["training"]["gate"] = STRICT

    loop.reconfigure(strict)
    card = train_and_register(loop.config, loop.storage, pipeline_run="run-3")
    rejected = evaluate_and_gate(loop.config, loop.storage, card["version"])
    assert card["version"] == "v2" and not rejected["promoted"] and rejected["champion_before"] == "v1"
    recorded = loop.storage.read_bytes(decision_key(registry.model, "v2"))
    history, stage = registry.history(), registry.get("v2").stage

    again = train_and_register(loop.config, loop.storage, pipeline_run="run-4")
    replayed = evaluate_and_gate(loop.config, loop.storage, again["version"])
    assert again["reused"] and again["version"] == "v2"
    assert replayed["reused"] and {k: v for k, v in replayed.items() if k != "reused"} == rejected
    assert loop.storage.read_bytes(decision_key(registry.model, "v2")) == recorded  # not judged again
    assert (registry.history(), registry.get("v2").stage) == (history, stage)
    assert registry.champion().version == "v1"  # type: ignore[union-attr]

    def relaxed(data: dict) -> None:  # the same model (the gate is not part of its identity), another gate
        strict(data)
        data["training"]["gate"] = RELAXED

    loop.reconfigure(relaxed)
    judged = evaluate_and_gate(loop.config, loop.storage, train_and_register(loop.config, loop.storage)["version"])
    assert judged["version"] == "v2" and "reused" not in judged and judged["gate"] == RELAXED
    assert json.loads(loop.storage.read_text(decision_key(registry.model, "v2")))["gate"] == RELAXED
