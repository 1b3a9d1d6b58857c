"""``kfloop grafana``: the project's Grafana dashboard (serving, drift, pipeline metrics) as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load


@handle_errors
def grafana(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option(help="Where to write the dashboard; default: print it to stdout.")] = None,
) -> None:
    """Render the Grafana dashboard of the config's model (built with grafana-foundation-sdk) to import in
    Grafana; its queries read the Prometheus data source picked in the dashboard's `datasource` variable."""
    from kfloop.monitoring.grafana import render_dashboard, write_dashboard

    cfg = load(config)
    if out is None:
        typer.echo(render_dashboard(cfg, str(config)), nl=False)
        return
    console.print(f"wrote {escape(str(write_dashboard(cfg, out, str(config))))}")
