"""``kfloop dashboard``: Evidently's own UI over the workspace's drift checks (one project per model)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace


@handle_errors
def dashboard(
    config: ConfigOption = DEFAULT_CONFIG,
    port: Annotated[int, typer.Option("--port", help="Port of the UI.")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on: this machine only by default; 0.0.0.0 for all.")
    ] = "127.0.0.1",
) -> None:
    """Serve the Evidently UI over the drift checks' snapshots until Ctrl-C: drift share over time, per-feature
    drift, the prediction distribution, the data-quality score and model metrics per version.

    The UI workspace is evidently_ui/ in a local workspace (each check adds its snapshot), else
    ./.kfloop/evidently_ui; snapshots stored in the workspace but missing from it are added first."""
    cfg = load(config)
    storage = workspace(cfg)
    from evidently.ui.service.app import get_config, run

    from kfloop.monitoring.evidently_outputs import sync_workspace

    path, added = sync_workspace(cfg, storage)
    console.print(
        f"Evidently UI workspace {escape(str(path))} ({added} snapshot(s) added): http://{host}:{port}/ (Ctrl-C stops)"
    )
    run(get_config(host=host, port=port, workspace=str(path)))
