"""`kfloop monitor check`'s Evidently outputs: each tested window leaves an Evidently snapshot whose drift scores
are the verdict's, its HTML report, and the snapshot in the model's project of the Evidently UI workspace (with
its dashboard). The champion is registered by hand (a reference profile, no training) and its traffic is written
to a real inference log, so this runs in seconds."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evidently.core.report import Snapshot

from kfloop import layout
from kfloop.config import Config, parse_config
from kfloop.monitoring.columns import monitored_frame
from kfloop.monitoring.dashboard import PANEL_TITLES, project_id, snapshot_path
from kfloop.monitoring.evidently_outputs import sync_workspace, workspace_dir
from kfloop.monitoring.evidently_report import DATA_QUALITY, MODEL_TAG, drift_scores, reference_frame
from kfloop.monitoring.monitor import run_check
from kfloop.monitoring.profile import build_profile, profile_to_bytes
from kfloop.registry import ModelRegistry
from kfloop.serving.inference_log import InferenceLog
from kfloop.storage import LocalStorage
from tests.conftest import demo_config

NUMERIC = ["amount", "distance_from_home_km", "hour_of_day"]
CATEGORICAL = ["channel", "merchant_category"]
NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)
TOL = 1e-9


def traffic(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 1, n),
            "distance_from_home_km": rng.gamma(2, 5 * (1 + shift), n),
            "hour_of_day": rng.integers(0, 24, n),
            "channel": rng.choice(["pos", "online", "atm"], n, p=[0.6, 0.3, 0.1]).astype(object),
            "merchant_category": rng.choice(["grocery", "travel", "fuel", "retail"], n).astype(object),
            "score": rng.beta(1 + shift * 4, 8, n),
        }
    )
    frame.loc[rng.random(n) < 0.02, "amount"] = np.nan  # nulls: left out of the tests, kept in the reference frame
    return frame


@dataclass
class Champion:
    config: Config
    storage: LocalStorage
    version: str


def make_champion(tmp_path: Path, reference_rows: int = 4000) -> Champion:
    data = demo_config(tmp_path / "ws").model_dump(mode="json")
    data["monitoring"] = {
        "window": {"rows": 1500},
        "min_rows": 500,
        "features": list(data["features"]["request_features"]),
        "columns": {"amount": {"stattest": "ks", "threshold": 0.01}},  # a configured test and threshold
    }
    config = parse_config(data, "test config")
    storage = LocalStorage(tmp_path / "ws")
    frame = monitored_frame(traffic(reference_rows, 0.0, 1), [*NUMERIC, "score"], CATEGORICAL)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / layout.REFERENCE_PROFILE_FILE).write_bytes(
        profile_to_bytes(build_profile(frame, [*NUMERIC, "score"], CATEGORICAL))
    )
    card = {
        "task": "binary",
        "metrics": {"validation": {"roc_auc": 0.91, "pr_auc": 0.52, "f1": 0.47, "log_loss": 0.2}},
        "lineage": {
            "reference_profile": {
                "file": layout.REFERENCE_PROFILE_FILE,
                "split": "train",
                "rows": reference_rows,
                "split_rows": reference_rows,
                "sampled": False,
                "seed": 0,
                "numeric": NUMERIC,
                "categorical": CATEGORICAL,
                "prediction": {"column": "score", "kind": "numeric"},
            }
        },
    }
    registry = ModelRegistry(storage, config.training.model_name)
    version = registry.register(folder, card).version
    registry.promote(version, "test champion")
    return Champion(config, storage, version)


def log_traffic(champion: Champion, frame: pd.DataFrame, at: datetime, tag: str) -> None:
    log = InferenceLog(champion.storage, champion.config, clock=lambda: at)
    try:
        columns = {c: frame[c].tolist() for c in frame.columns}
        columns["customer_id"] = [f"{tag}-{i}" for i in range(len(frame))]
        log.append(columns, model_version=champion.version, request_id=tag, protocol="v2")
    finally:
        log.close()


@pytest.fixture
def champion(tmp_path: Path) -> Champion:
    return make_champion(tmp_path)


def test_a_check_stores_an_evidently_snapshot_with_the_verdicts_scores_and_its_html(champion: Champion) -> None:
    log_traffic(champion, traffic(1500, 0.6, 2), NOW - timedelta(minutes=5), "shifted")
    record = run_check(champion.config, champion.storage, NOW)
    assert record["verdict"] == "drift"
    model, check_id = record["model"], record["check_id"]
    ev = record["evidently"]
    assert ev["snapshot"] == layout.drift_snapshot_key(model, check_id)
    assert ev["report"] == layout.drift_report_key(model, check_id)
    assert ev["reference_frame"] == {"rows": 4000, "sampled": False}
    assert json.loads(champion.storage.read_text(layout.drift_check_key(model, check_id, "json"))) == record

    stored = json.loads(champion.storage.read_text(ev["snapshot"]))
    scores = drift_scores(stored)
    assert set(scores) == {c["column"] for c in record["drift"]["columns"]} == {*NUMERIC, *CATEGORICAL, "score"}
    for col in record["drift"]["columns"]:
        method, score = scores[col["column"]]
        assert method == f"kfloop_{col['stattest']}"
        assert abs(score - col["score"]) <= TOL, col
    assert record["drift"]["share"] >= record["drift"]["drift_share"]
    assert record["drift"]["columns"][0]["stattest"] == "ks"  # amount: the configured test
    snapshot = Snapshot.loads(champion.storage.read_text(ev["snapshot"]))  # Evidently reads it back
    results = snapshot.dict()
    drifted = next(m for m in results["metrics"] if m["config"]["type"].endswith("DriftedColumnsCount"))
    assert drifted["value"]["share"] == pytest.approx(record["drift"]["share"], abs=TOL)
    quality = [m for m in results["metrics"] if m["config"]["type"].endswith("KfloopValue")]
    assert [(m["config"]["name"], m["value"]) for m in quality] == [(DATA_QUALITY, record["data_quality"]["score"])]
    assert stored["metadata"]["check_id"] == check_id and stored["metadata"]["model_version"] == champion.version

    html = champion.storage.read_text(ev["report"])
    assert html.lstrip().lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")

    workspace = workspace_dir(champion.config)
    assert workspace == Path(champion.config.storage.root) / layout.EVIDENTLY_UI
    project = workspace / str(project_id(model))
    assert json.loads((project / "metadata.json").read_text())["name"] == model
    board = json.loads((project / "dashboard.json").read_text())
    assert [p["title"] for p in board["panels"]] == list(PANEL_TITLES)
    assert json.loads(snapshot_path(workspace, model, check_id).read_text()) == stored
    # the version's model metrics: a snapshot of their own (validation metrics: no gate decision here)
    version = json.loads(champion.storage.read_text(layout.drift_snapshot_key(model, f"model-{champion.version}")))
    assert version["tags"] == [MODEL_TAG, champion.version] and version["metadata"]["split"] == "validation"
    values = {
        r["metric_value_location"]["metric"]["params"]["name"]: r["value"] for r in version["metric_results"].values()
    }
    assert values == {"model.roc_auc": 0.91, "model.pr_auc": 0.52, "model.f1": 0.47}  # the gate's comparable ones
    assert snapshot_path(workspace, model, f"model-{champion.version}").exists()
    assert sync_workspace(champion.config, champion.storage) == (workspace, 0)  # already there: nothing to add


def test_insufficient_data_writes_no_snapshot_and_a_sync_restores_a_lost_one(champion: Champion) -> None:
    log_traffic(champion, traffic(400, 0.0, 3), NOW - timedelta(minutes=10), "few")
    few = run_check(champion.config, champion.storage, NOW)
    assert few["verdict"] == "insufficient_data" and "evidently" not in few
    assert not champion.storage.exists(layout.drift_snapshot_key(few["model"], few["check_id"]))

    log_traffic(champion, traffic(1500, 0.0, 4), NOW - timedelta(minutes=5), "same")
    same = run_check(champion.config, champion.storage, NOW + timedelta(seconds=1))
    assert same["verdict"] == "no_drift"
    path = snapshot_path(workspace_dir(champion.config), same["model"], same["check_id"])
    path.unlink()  # e.g. an S3 workspace's UI directory on another machine
    assert sync_workspace(champion.config, champion.storage)[1] == 1 and path.exists()


def test_the_reference_frame_rebuilds_the_profile_and_a_large_one_is_sampled_with_the_profiles_scores() -> None:
    frame = monitored_frame(traffic(3000, 0.0, 5), [*NUMERIC, "score"], CATEGORICAL)
    profile = build_profile(frame, [*NUMERIC, "score"], CATEGORICAL)
    rebuilt, sampled = reference_frame(profile, list(profile.columns))
    assert not sampled and len(rebuilt) == 3000
    again = build_profile(rebuilt, [*NUMERIC, "score"], CATEGORICAL)
    for name, col in profile.columns.items():
        other = again.columns[name]
        assert (col.rows, col.nulls, col.categories) == (other.rows, other.nulls, other.categories)
        if col.values is not None:
            assert np.array_equal(col.values, other.values)
    small, sampled = reference_frame(profile, list(profile.columns), max_rows=1000, seed=7)
    assert sampled and len(small) == 1000


def test_a_numeric_column_with_few_values_keeps_evidentlys_choice_and_the_verdicts_score() -> None:
    """Evidently's default choice tests a numeric column of few values with chi-square, a test Evidently will
    not run on a numeric column by name: the report asks for ``kfloop`` (the same choice) there."""
    from kfloop.monitoring.check import drift_verdict
    from kfloop.monitoring.evidently_report import drift_snapshot, snapshot_json

    rng = np.random.default_rng(8)

    def frame(n: int, p: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"level": rng.choice([0.0, 1.0, 2.0], n, p=p), "score": rng.random(n)})

    profile = build_profile(frame(800, [0.5, 0.3, 0.2]), ["level", "score"], [])
    window = frame(600, [0.3, 0.3, 0.4])
    config = parse_config(demo_config().model_dump(mode="json"), "test config")
    drift = drift_verdict(config.monitoring, profile, window, "score")
    record = {
        "check_id": "c",
        "model": "m",
        "model_version": "v1",
        "checked_at": NOW.isoformat(),
        "verdict": drift.pop("verdict"),
        "drift": drift,
        "data_quality": {"score": 100.0},
    }
    assert [c["stattest"] for c in drift["columns"]] == ["chisquare", "ks"]
    snapshot, _ = drift_snapshot(record, profile, window, "score")
    scores = drift_scores(json.loads(snapshot_json(snapshot)))
    assert scores["level"][0] == "kfloop" and scores["score"][0] == "kfloop_ks"
    for col in drift["columns"]:
        assert abs(scores[col["column"]][1] - col["score"]) <= TOL


@pytest.mark.slow
def test_the_snapshot_is_cheap_at_the_demo_size(tmp_path: Path) -> None:
    """Demo size: a 10 000-row window of the demo model's 20 columns against a ~140 000-row reference."""
    from kfloop.monitoring.check import drift_verdict
    from kfloop.monitoring.columns import monitored_columns
    from kfloop.monitoring.evidently_report import drift_snapshot, snapshot_html, snapshot_json

    config = demo_config()
    cols = monitored_columns(config)
    rng = np.random.default_rng(0)

    def frame(n: int) -> pd.DataFrame:
        data = {c: rng.gamma(2, 3, n) for c in cols.numeric} | {"score": rng.beta(1, 8, n)}
        data |= {c: rng.choice(["a", "b", "c", "d", "e"], n).astype(object) for c in cols.categorical}
        return pd.DataFrame(data)

    profile = build_profile(frame(140_000), cols.all_numeric, cols.all_categorical)
    window = frame(10_000)
    start = time.perf_counter()
    drift = drift_verdict(config.monitoring, profile, window, "score")
    verdict_s = time.perf_counter() - start
    record = {
        "check_id": "c",
        "model": "m",
        "model_version": "v1",
        "checked_at": NOW.isoformat(),
        "verdict": drift.pop("verdict"),
        "drift": drift,
        "data_quality": {"score": 100.0},
    }
    start = time.perf_counter()
    snapshot, reference = drift_snapshot(record, profile, window, "score")
    snapshot_json(snapshot), snapshot_html(snapshot)
    evidently_s = time.perf_counter() - start
    print(f"verdict {verdict_s:.3f} s, Evidently snapshot + HTML {evidently_s:.3f} s, reference {reference}")
    assert reference["sampled"] and reference["rows"] == 50_000
    assert evidently_s < 10  # measured ~1 s on 2 cores; a generous bound against a regression to minutes


def test_the_cli_names_the_report(champion: Champion, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app
    from kfloop.config import config_to_json

    log_traffic(champion, traffic(1500, 0.0, 6), datetime.now(UTC) - timedelta(minutes=1), "now")
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(champion.config))
    result = CliRunner().invoke(app, ["monitor", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "Evidently report:" in result.output and ".html" in result.output
