"""The whole loop, as `make run` ends it (`kfloop loop`) at a reduced size: v1 trained and served; normal
traffic checked (no drift, no retrain); drifted traffic checked (drift within one window, exactly one retrain
for the episode, though a second check sees it); v2 trained on the new data, better than v1 on it, promoted
and hot-switched into the running server; the drift cleared against v2's reference. Asserted from what the
workspace recorded (verdicts, audit trail, gate decisions, registry, inference log), not from the printout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from kfloop.config import load_config
from kfloop.layout import decision_key
from kfloop.monitoring.check import DRIFT, NO_DRIFT
from kfloop.monitoring.monitor import check_ids, read_check
from kfloop.monitoring.retrain import RETRAIN, read_audit
from kfloop.registry import ModelRegistry
from kfloop.serving.inference_log import read_inference_log
from kfloop.serving.log_table import MODEL_VERSION
from kfloop.storage import LocalStorage
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PHASE_ROWS = 600


def test_the_loop_closes_drift_retrains_once_and_v2_serves(tmp_path: Path) -> None:
    workdir = tmp_path / "loop"
    cmd = [sys.executable, "-m", "kfloop", "loop", "-c", str(REPO / "examples" / "fraud" / "kfloop.yaml")]
    cmd += ["--rows", "40000", "--phase-rows", str(PHASE_ROWS), "--workdir", str(workdir)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the loop closed" in done.stdout

    config = load_config(workdir / "kfloop.yaml")
    storage = LocalStorage(workdir)
    model = config.training.model_name
    registry = ModelRegistry(storage, model)
    assert [v.version for v in registry.list()] == ["v1", "v2"]
    champion = registry.champion()
    assert champion is not None and champion.version == "v2"

    checks = [read_check(storage, model, c) for c in check_ids(storage, model)]
    assert [(c["model_version"], c["verdict"]) for c in checks] == [
        ("v1", NO_DRIFT),  # normal traffic
        ("v1", DRIFT),  # drifted traffic: within one window
        ("v1", DRIFT),  # the next check of the same episode
        ("v2", NO_DRIFT),  # drift cleared against v2's reference
    ]
    assert all(c["window"]["rows"] == PHASE_ROWS for c in checks)
    drifted = {c["column"] for c in checks[1]["drift"]["drifted"]}
    assert {"amount", "merchant_category"} <= drifted

    audit = read_audit(storage)
    assert [a["decision"] for a in audit].count(RETRAIN) == 1
    assert [a["check_id"] for a in audit] == [c["check_id"] for c in checks]  # every decision audited
    started = next(a for a in audit if a["decision"] == RETRAIN)
    assert started["check_id"] == checks[1]["check_id"] and started["run"]["where"] == "local"
    assert "already started run" in audit[2]["reason"]

    judged = json.loads(storage.read_text(decision_key(model, "v2")))
    assert judged["promoted"] and judged["champion_before"] == "v1"
    assert judged["candidate"]["pr_auc"] > judged["champion"]["pr_auc"]  # better on the new data

    log = read_inference_log(storage, config)
    served = pc.value_counts(log.column(MODEL_VERSION)).to_pylist()
    counts = {d["values"]: d["counts"] for d in served}
    assert counts["v1"] >= 2 * PHASE_ROWS and counts["v2"] >= PHASE_ROWS  # v2 answered the settled phase
