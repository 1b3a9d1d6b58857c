"""The Evidently UI workspace of the drift checks: one project per model, each check's snapshot in it, and a
dashboard defined as code.

The workspace is Evidently's own local workspace (a directory: ``<project>/metadata.json``, ``dashboard.json``,
``snapshots/<id>.json``), read by Evidently's UI server (``evidently ui --workspace DIR``, which
``kfloop dashboard`` runs). Ids are derived from names (project: the model; snapshot: the check id), so
adding a check twice, or syncing the stored snapshots again, changes nothing, and two checks racing to create
a model's project create the same one. Snapshot files are written atomically (the UI server watches the
directory and must never read half a file).

Panels (:func:`dashboard_model`): drift share over time (a line), per-feature drift scores of the newest check
(counters), the prediction's distribution in the newest window (quantiles of a score, class shares of a
multiclass prediction), the window's data-quality score over time (a line), and model metrics per version
(bars, from one model-metrics snapshot per version). Lines only for single series: Evidently's UI (MUI
charts) draws a mark per point, and a line per feature or quantile over 500 checks takes several seconds to
draw, past the 3 s the dashboard test allows.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric, ProjectModel
from evidently.ui.storage.local.base import DASHBOARD_FILE_NAME, PROJECT_FILE_NAME, SNAPSHOTS_DIR_NAME

from kfloop.files import atomic_write
from kfloop.monitoring.evidently_report import DATA_QUALITY, MODEL_METRIC, MODEL_TAG, PREDICTION_QUANTILES

#: Namespace of the ids kfloop gives Evidently projects, panels and snapshots.
NAMESPACE = uuid.UUID("6f1d3a52-1b7e-4c1e-9a43-6b1f0d9c2e11")
TAB = "Drift monitoring"
PANEL_TITLES = (
    "Drift share over time",
    "Per-feature drift score",
    "Prediction distribution",
    "Data-quality score",
    "Model metrics per version",
)


def project_id(model: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"project:{model}")


def snapshot_id(model: str, check_id: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"snapshot:{model}:{check_id}")


def _panel(
    title: str, kind: str, values: list[PanelMetric], size: str = "full", subtitle: str | None = None, **params: object
) -> DashboardPanelPlot:
    return DashboardPanelPlot(
        id=uuid.uuid5(NAMESPACE, f"panel:{title}"),
        title=title,
        subtitle=subtitle,
        size=size,
        values=values,
        plot_params={"plot_type": kind, **params},
    )


def dashboard_model(prediction: str, prediction_kind: str, model_metrics: list[str]) -> DashboardModel:
    """The project's dashboard: one tab of the five panels (see the module doc)."""
    if prediction_kind == "numeric":
        distribution = [
            PanelMetric(
                legend=f"q{q:g}", metric="QuantileValue", metric_labels={"column": prediction, "quantile": str(q)}
            )
            for q in PREDICTION_QUANTILES
        ]
    else:
        distribution = [
            PanelMetric(
                legend="{{label}}",
                metric="UniqueValueCount",
                metric_labels={"column": prediction, "value_type": "share"},
            )
        ]
    panels = [
        _panel(
            PANEL_TITLES[0],
            "line",
            [PanelMetric(legend="drifted share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
        ),
        _panel(  # the newest check's: a line per feature would draw (features x checks) marks, seconds of work
            PANEL_TITLES[1],
            "counter",
            [PanelMetric(legend="{{column}} ({{method}})", metric="ValueDrift")],
            subtitle="newest check (p-values drift below the threshold, distances at or above it)",
            aggregation="last",
        ),
        _panel(  # the newest check's too: a line per quantile would draw (quantiles x checks) marks
            PANEL_TITLES[2],
            "counter",
            distribution,
            size="half",
            subtitle=f"{prediction} in the newest check's window",
            aggregation="last",
        ),
        _panel(
            PANEL_TITLES[3],
            "line",
            [PanelMetric(legend="score (%)", metric="KfloopValue", metric_labels={"name": DATA_QUALITY})],
            size="half",
        ),
        _panel(  # one snapshot per version (tagged MODEL_TAG), not per check: a bar group per version
            PANEL_TITLES[4],
            "bar",
            [
                PanelMetric(
                    legend=f"{{{{model_version}}}} {name}",
                    tags=[MODEL_TAG],
                    metric="KfloopValue",
                    metric_labels={"name": MODEL_METRIC + name},
                )
                for name in model_metrics
            ],
            is_stacked=False,
        ),
    ]
    tab = DashboardTabModel(id=uuid.uuid5(NAMESPACE, f"tab:{TAB}"), title=TAB, panels=[p.id for p in panels])
    return DashboardModel(tabs=[tab], panels=panels)


def _write_json(path: Path, obj: dict) -> None:
    data = json.dumps(obj, indent=2, default=str).encode()
    atomic_write(path, lambda fh: fh.write(data))


def ensure_project(workspace: Path, model: str, dashboard: DashboardModel, description: str = "") -> uuid.UUID:
    """The model's project in the workspace, created if missing; its dashboard written when it differs."""
    pid = project_id(model)
    folder = workspace / str(pid)
    meta = folder / PROJECT_FILE_NAME
    if not meta.exists():
        project = ProjectModel(id=pid, name=model, description=description or f"kfloop drift checks of {model}")
        (folder / SNAPSHOTS_DIR_NAME).mkdir(parents=True, exist_ok=True)
        _write_json(meta, json.loads(project.json()))
    board = folder / DASHBOARD_FILE_NAME
    wanted = json.loads(dashboard.json())
    if not board.exists() or json.loads(board.read_text()) != wanted:
        _write_json(board, wanted)
    return pid


def snapshot_path(workspace: Path, model: str, check_id: str) -> Path:
    return workspace / str(project_id(model)) / SNAPSHOTS_DIR_NAME / f"{snapshot_id(model, check_id)}.json"


def add_snapshot(workspace: Path, model: str, check_id: str, snapshot_json: str | bytes) -> Path:
    """Put one check's snapshot (its stored JSON) in the model's project (atomically; again: no change)."""
    path = snapshot_path(workspace, model, check_id)
    if not path.exists():
        data = snapshot_json.encode() if isinstance(snapshot_json, str) else snapshot_json
        atomic_write(path, lambda fh: fh.write(data))
    return path
