"""A small workspace with something in every section of the periodic report, written by the stages' own modules:
two ingest and validate runs (the demo contract: the second with bad rows quarantined), the features' state and
lag samples, three registered versions (v1 promoted, v2 rejected, v3 promoted: their cards and gate decisions),
drift checks forming one episode, the retrain decisions the trigger took on them, and pipeline runs (the SLO).

Only the model trainer and the drift statistics are left out (each takes seconds, and their records are what the
report reads): the registered versions hold a placeholder file under real cards, and the checks are verdict
records as :func:`kfloop.monitoring.monitor.run_check` stores them, written by its ``store_check``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kfloop import layout
from kfloop.components.ingest import ingest
from kfloop.components.validate import validate
from kfloop.config import Config, config_to_json, parse_config
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.feature_repo.freshness import FreshnessSample, record_samples
from kfloop.feature_repo.state import ViewState
from kfloop.monitoring.monitor import store_check
from kfloop.monitoring.retrain import decide
from kfloop.registry import ModelRegistry
from kfloop.slo.runs import end_run, start_run
from kfloop.storage import LocalStorage, Storage
from tests.conftest import demo_config

#: The environment variable the test config's report webhook URL is read from.
HOOK_ENV = "KFLOOP_TEST_REPORT_WEBHOOK"
VIEWS = ("customer_activity", "merchant_risk")
#: (version, validation PR AUC, test PR AUC, promoted by the gate)
VERSIONS = (("v1", 0.61, 0.60, True), ("v2", 0.52, 0.50, False), ("v3", 0.70, 0.68, True))
#: The drift checks, oldest first: (hours before now, version, verdict, drifted share)
CHECKS = (
    (30, "v3", "no_drift", 0.0),
    (20, "v3", "drift", 0.5),
    (19, "v3", "drift", 0.75),
    (18, "v3", "insufficient_data", None),
    (10, "v3", "no_drift", 0.1),
)

_TEST = {"stattest": "psi", "score": 0.3, "threshold": 0.1, "prediction": False}


class Launcher:
    """Starts no pipeline (that is Kubeflow's or `kfloop run`'s job): names the run the trigger asked for."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def start(self, config: Config, run_name: str) -> dict:
        self.runs.append(run_name)
        return {"run_id": run_name, "where": "test"}


def report_config(root: Path, *, webhook: bool = True) -> Config:
    """The demo config on ``root``, with one webhook for the report event and fast delivery settings."""
    data = demo_config(root).model_dump(mode="json")
    data["alerts"] = {"timeout": "2s", "retries": 1, "backoff": "0s"}
    if webhook:
        data["alerts"]["webhooks"] = [{"url": "${" + HOOK_ENV + "}", "secret": None, "events": ["report", "drift"]}]
    data["monitoring"] = {**data["monitoring"], "min_rows": 10}
    data["monitoring"]["retrain"] = {**data["monitoring"].get("retrain", {}), "cooldown": "1h"}
    return parse_config(data, "<report test>")


def _data(config: Config, storage: Storage, root: Path) -> None:
    """Two ingest + validate runs: clean rows, then rows with out-of-range amounts (quarantined by the contract)."""
    first = generate(DemoSpec(rows=1200, seed=3, days=10))
    start = first.frame["event_timestamp"].max() + timedelta(minutes=1)
    second = generate(DemoSpec(rows=1200, seed=4, days=10, start=start, defects=DefectSpec(out_of_range=0.05)))
    for n, data in enumerate((first, second)):
        path = root / f"source-{n}.csv"
        write_frame(data.frame, path, "csv")
        ingest(config, storage, source_uri=str(path))
        validate(config, storage)


def _features(storage: Storage, now: datetime) -> None:
    """Both views materialized (merchant_risk behind the SLA) and a day of minute lag samples for the first."""

    def ago(**delta: float) -> str:
        return (now - timedelta(**delta)).isoformat()

    ViewState(VIEWS[0], ago(minutes=5), 900, ago(minutes=6), 40).save(storage)
    ViewState(VIEWS[1], ago(hours=1), 300, ago(hours=3), 12).save(storage)
    first = (now - timedelta(hours=24)).replace(second=0, microsecond=0)
    samples = [
        FreshnessSample(VIEWS[0], first + timedelta(minutes=m), 20, 30.0 + m % 7, 120.0 + (m % 60) * 20, 1500.0, None)
        for m in range(0, 24 * 60, 5)
    ]
    record_samples(storage, samples, writer="report-test")


def _registry(config: Config, storage: Storage, root: Path) -> None:
    registry = ModelRegistry(storage, config.training.model_name)
    files = root / "model"
    files.mkdir(exist_ok=True)
    (files / "model.bin").write_bytes(b"placeholder weights")
    champion = None
    for version, val, test, promote in VERSIONS:
        card = {"framework": "torch", "task": "binary", "threshold": 0.5, "metrics": {"validation": {"pr_auc": val}}}
        card["metrics"]["validation"] |= {"roc_auc": val + 0.2, "f1": val - 0.1}
        card["training_set"] = {"run_id": f"ts-{version}"}
        mv = registry.register(files, card)
        assert mv.version == version
        candidate = {"pr_auc": test, "roc_auc": test + 0.2, "f1": test - 0.1}
        reasons = ["meets the minimums"] if promote else [f"pr_auc {test} is worse than the champion's"]
        decision = {"version": version, "promoted": promote, "reasons": reasons, "candidate": candidate}
        decision["champion_before"] = champion
        storage.write_text(layout.decision_key(registry.model, version), json.dumps(decision))
        if promote:
            registry.promote(version, "; ".join(reasons))
            champion = version
        else:
            registry.reject(version, "; ".join(reasons))


def _drift(config: Config, storage: Storage, now: datetime) -> Launcher:
    """The checks stored as the drift check stores them; the trigger decides on each drift verdict."""
    launcher = Launcher()
    model = config.training.model_name
    for hours, version, verdict, share in CHECKS:
        at = now - timedelta(hours=hours)
        columns = [
            {"column": c, "drifted": share is not None and i < share * 4} | _TEST
            for i, c in enumerate(("amount", "channel", "hour_of_day", "merchant_category"))
        ]
        record = {
            "check_id": f"{at:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}",
            "model": model,
            "model_version": version,
            "checked_at": at.isoformat(),
            "checked_at_unix": at.timestamp(),
            "verdict": verdict,
            "window": {"rows": 500 if verdict != "insufficient_data" else 5},
            "drift": {"share": share, "drift_share": 0.5, "columns": columns if share is not None else []},
            "data_quality": {"score": 100.0, "rows": 500, "checks": []},
        }
        store_check(storage, record)
        if verdict == "drift":
            decide(config, storage, record, launcher, now=at)
    return launcher


def _runs(config: Config, storage: Storage, now: datetime) -> None:
    model = config.training.model_name
    for n, failed in enumerate((False, False, True)):
        run = start_run(storage, model, f"run-{n}", now - timedelta(hours=40 - n))
        error = RuntimeError("a step failed") if failed else None
        end_run(storage, run, error=error, now=now - timedelta(hours=39 - n))


def fill(root: Path, now: datetime | None = None) -> tuple[Config, LocalStorage]:
    """The config and workspace under ``root`` (the workspace in ``root/ws``), every section filled."""
    now = now or datetime.now(UTC)
    config = report_config(root / "ws")
    storage = LocalStorage(root / "ws")
    _data(config, storage, root)
    _features(storage, now)
    _registry(config, storage, root)
    _drift(config, storage, now)
    _runs(config, storage, now)
    return config, storage


@dataclass(frozen=True)
class FilledWorkspace:
    """A filled workspace, its config, and the config as a file (JSON is YAML: the CLI's ``-c`` reads it)."""

    root: Path
    config: Config
    config_path: Path
    storage: LocalStorage


def filled_workspace(root: Path, edit: Callable[[dict], None] | None = None) -> FilledWorkspace:
    """:func:`fill` ``root``; ``edit`` changes the config (as JSON data) before it is parsed and written."""
    config, storage = fill(root)
    if edit is not None:
        data = config.model_dump(mode="json")
        edit(data)
        config = parse_config(data, "<test config>")
    path = root / "kfloop.json"
    path.write_text(config_to_json(config))
    return FilledWorkspace(root, config, path, storage)
