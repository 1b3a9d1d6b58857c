"""A kfloop workspace whose Evidently UI project holds many drift-check snapshots, made quickly.

One real snapshot is made by the check's own code (:func:`drift_snapshot`, a small window); the others are
copies of it with their own check id, time, version and values (drift scores, drifted share, prediction
quantiles, data-quality score), plus three versions' model-metrics snapshots, so the dashboard plots real
series. Copies leave out the widgets (the per-snapshot report pages, which no dashboard panel reads) to keep
the files small (~20 KB each instead of ~400 KB).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from kfloop.config import Config, parse_config
from kfloop.layout import model_snapshot_name
from kfloop.monitoring.check import drift_verdict
from kfloop.monitoring.columns import monitored_frame
from kfloop.monitoring.dashboard import ensure_project, project_id, snapshot_path
from kfloop.monitoring.evidently_outputs import _dashboard, workspace_dir
from kfloop.monitoring.evidently_report import drift_snapshot, model_snapshot, snapshot_json
from kfloop.monitoring.profile import build_profile
from tests.conftest import demo_config
from tests.monitoring.test_evidently_outputs import CATEGORICAL, NUMERIC, traffic

START = datetime(2026, 5, 1, tzinfo=UTC)


def config_for(root: Path) -> Config:
    data = demo_config(root).model_dump(mode="json")
    data["monitoring"] = {"features": list(data["features"]["request_features"])}
    return parse_config(data, "test config")


def base_snapshot(config: Config) -> dict:
    """One real snapshot of a small window (parsed JSON)."""
    numeric = [*NUMERIC, "score"]
    profile = build_profile(monitored_frame(traffic(2000, 0.0, 1), numeric, CATEGORICAL), numeric, CATEGORICAL)
    window = monitored_frame(traffic(config.monitoring.min_rows, 0.2, 2), [*NUMERIC, "score"], CATEGORICAL)
    drift = drift_verdict(config.monitoring, profile, window, "score")
    record = {
        "check_id": "base",
        "model": config.training.model_name,
        "model_version": "v1",
        "checked_at": START.isoformat(),
        "verdict": drift.pop("verdict"),
        "drift": drift,
        "data_quality": {"score": 100.0},
    }
    snapshot, _ = drift_snapshot(record, profile, window, "score")
    return json.loads(snapshot_json(snapshot))


def fill_workspace(config: Config, count: int, seed: int = 0) -> Path:
    """``count`` snapshots of the configured model, 15 minutes apart, in its Evidently UI project."""
    model = config.training.model_name
    workspace = workspace_dir(config)
    ensure_project(workspace, model, _dashboard(config, {"column": "score", "kind": "numeric"}))
    base = base_snapshot(config)
    base["widgets"], base["tests_widgets"] = [], []
    for result in base["metric_results"].values():
        result["widget"] = []
    rng = np.random.default_rng(seed)
    version_metrics = {"v1": (0.9, 0.5, 0.45), "v2": (0.93, 0.56, 0.5), "v3": (0.94, 0.58, 0.52)}
    for i in range(count):
        at = START + timedelta(minutes=15 * i)
        check_id = f"{at:%Y%m%dT%H%M%SZ}-{i:06x}"
        version = list(version_metrics)[min(2, 3 * i // count)]
        drifting = 0.3 < (i % 96) / 96 < 0.45  # a daily drift episode
        snap = copy.deepcopy(base)
        snap["timestamp"] = at.replace(tzinfo=None).isoformat()
        snap["name"] = f"{model} {version} {check_id}"
        snap["metadata"] = {**snap["metadata"], "check_id": check_id, "model_version": version}
        drifted = 0
        for result in snap["metric_results"].values():
            params = result["metric_value_location"]["metric"]["params"]
            kind = params["type"].rsplit(":", 1)[-1]
            if kind == "ValueDrift":
                result["value"] = float(rng.uniform(0.12, 0.4) if drifting else rng.uniform(0.0, 0.08))
                drifted += drifting
            elif kind in ("QuantileValue", "MeanValue"):
                result["value"] = float(result["value"] * (1 + (0.5 if drifting else 0.05) * rng.standard_normal()))
            elif kind == "KfloopValue":
                result["value"] = float(100 - rng.exponential(0.5))
        for result in snap["metric_results"].values():
            if result["type"].endswith("CountValue"):
                total = len(result["metric_value_location"]["metric"]["params"]["columns"])
                result["count"]["value"], result["share"]["value"] = float(drifted), drifted / total
        snap["tags"] = ["drift" if drifting else "no_drift", version]
        path = snapshot_path(workspace, model, check_id)
        path.write_text(json.dumps(snap))
    for n, (version, (auc, pr_auc, f1)) in enumerate(version_metrics.items()):
        metrics = {"roc_auc": auc, "pr_auc": pr_auc, "f1": f1}
        at = START + timedelta(minutes=15 * count * n // 3)
        snap = model_snapshot(model, version, metrics, "test", at)
        name = model_snapshot_name(version)
        snapshot_path(workspace, model, name).write_text(snapshot_json(snap))
    return workspace


__all__ = ["config_for", "fill_workspace", "project_id"]
