"""``kfloop schedules render``: the scheduled jobs (drift check, feature materialization) as Argo CronWorkflows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load

app = typer.Typer(help="Scheduled jobs as Argo CronWorkflows (built with Hera).", no_args_is_help=True)


@app.command("render")
@handle_errors
def render(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for one YAML file per CronWorkflow; default: print them all to stdout."),
    ] = None,
) -> None:
    """Render the drift check and the incremental feature materialization as Argo CronWorkflows (apply them with
    `kubectl apply -f`); the config comes from the ConfigMap named in schedules.config_map."""
    from kfloop.pipelines.schedules import render_schedules, write_schedules

    cfg = load(config)
    if out is None:
        typer.echo("---\n".join(render_schedules(cfg, str(config)).values()), nl=False)
        return
    for path in write_schedules(cfg, out, str(config)):
        console.print(f"wrote {escape(str(path))}")
