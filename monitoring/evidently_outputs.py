"""A drift check's Evidently outputs, stored beside its verdict, and the Evidently UI workspace they feed.

Each check that tested something (not ``insufficient_data``) stores its Evidently snapshot (JSON, the format an
Evidently workspace holds and ``Snapshot.load`` reads) and HTML report under ``monitoring/<model>/evidently/``
(:func:`kfloop.layout.drift_snapshot_key`), and adds the snapshot to the Evidently UI workspace
(:func:`kfloop.layout.evidently_workspace`): inside a local kfloop workspace, that is all. With S3 storage the
snapshots are stored in the bucket, and the UI workspace (a local directory, which is what Evidently's UI reads)
is filled from them by :func:`sync_workspace` (``kfloop dashboard`` runs it before serving).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from kfloop import layout
from kfloop.config import Config
from kfloop.config.training import COMPARABLE
from kfloop.monitoring.dashboard import add_snapshot, dashboard_model, ensure_project, snapshot_path
from kfloop.monitoring.evidently_report import drift_snapshot, model_snapshot, snapshot_html, snapshot_json
from kfloop.monitoring.profile import ReferenceProfile
from kfloop.registry import ModelVersion
from kfloop.storage import Storage


def workspace_dir(config: Config) -> Path:
    """The Evidently UI workspace of this kfloop workspace."""
    return layout.evidently_workspace(config.storage.type, getattr(config.storage, "root", ""))


def model_metrics(storage: Storage, model: str, version: ModelVersion) -> tuple[str, dict[str, float]]:
    """The version's comparable metrics (those a gate may compare) and their split: the test split as the gate
    scored it (``decision.json``), else the card's validation metrics."""
    names = COMPARABLE.get(version.card.get("task", ""), {})
    key = layout.decision_key(model, version.version)
    split, found = "validation", (version.card.get("metrics") or {}).get("validation") or {}
    if storage.exists(key):
        candidate = json.loads(storage.read_text(key)).get("candidate") or {}
        if candidate:
            split, found = "test", candidate
    return split, {n: float(found[n]) for n in names if isinstance(found.get(n), int | float)}


def _dashboard(config: Config, prediction: dict):
    return dashboard_model(prediction["column"], prediction["kind"], list(COMPARABLE.get(config.training.task, {})))


def write_outputs(
    config: Config,
    storage: Storage,
    champion: ModelVersion,
    profile: ReferenceProfile,
    prediction: dict,
    frame: pd.DataFrame,
    record: dict,
) -> dict:
    """Store the check's snapshot and report, add the snapshot to the UI workspace (local storage); returns
    the record's ``evidently`` entry (keys, the report's reference frame, seconds taken)."""
    started = time.perf_counter()
    model, check_id = record["model"], record["check_id"]
    snapshot, reference = drift_snapshot(record, profile, frame, prediction["column"], seed=config.training.seed)
    body = snapshot_json(snapshot)
    version_name = layout.model_snapshot_name(champion.version)  # the version's metrics: once per version
    version_key = layout.drift_snapshot_key(model, version_name)
    version_body = None
    if not storage.exists(version_key):
        split, metrics = model_metrics(storage, model, champion)
        registered = datetime.fromisoformat(champion.card.get("registered") or record["checked_at"])
        version_body = snapshot_json(model_snapshot(model, champion.version, metrics, split, registered))
        storage.write_text(version_key, version_body)
    storage.write_text(layout.drift_snapshot_key(model, check_id), body)
    storage.write_text(layout.drift_report_key(model, check_id), snapshot_html(snapshot))
    entry = {
        "snapshot": layout.drift_snapshot_key(model, check_id),
        "report": layout.drift_report_key(model, check_id),
        "reference_frame": reference,
    }
    if config.storage.type == "local":
        workspace = workspace_dir(config)
        ensure_project(workspace, model, _dashboard(config, prediction))
        add_snapshot(workspace, model, check_id, body)
        if not snapshot_path(workspace, model, version_name).exists():
            add_snapshot(workspace, model, version_name, version_body or storage.read_bytes(version_key))
        entry["workspace"] = str(workspace)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry


def sync_workspace(config: Config, storage: Storage, prediction: dict | None = None) -> tuple[Path, int]:
    """Add every stored snapshot of the configured model missing from the UI workspace; returns the workspace
    and how many were added. ``prediction`` (``{"column", "kind"}``, for the dashboard's prediction panel)
    defaults to the configured model's (:func:`kfloop.monitoring.columns.monitored_columns`)."""
    from kfloop.monitoring.columns import monitored_columns

    model = config.training.model_name
    workspace = workspace_dir(config)
    if prediction is None:
        cols = monitored_columns(config)
        prediction = {"column": cols.prediction, "kind": cols.prediction_kind}
    ensure_project(workspace, model, _dashboard(config, prediction))
    prefix = layout.drift_snapshots_prefix(model) + "/"
    added = 0
    for key in storage.list(prefix):
        if not key.endswith(".json"):
            continue
        check_id = key[len(prefix) : -len(".json")]
        if not snapshot_path(workspace, model, check_id).exists():
            add_snapshot(workspace, model, check_id, storage.read_bytes(key))
            added += 1
    return workspace, added
