"""``kfloop schedules render`` / ``apply``: the scheduled jobs (drift check, feature materialization) as Argo
CronWorkflows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, require_role
from kfloop.cli._kube import ContextOption, DryRunOption, KubeconfigOption, ServerDryRunOption, apply_and_report

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


@app.command("apply")
@handle_errors
def apply(
    config: ConfigOption = DEFAULT_CONFIG,
    dry_run: DryRunOption = False,
    server_dry_run: ServerDryRunOption = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Server-side apply the CronWorkflows `render` builds to cluster.namespace (field manager kfloop): a second
    run changes nothing. Needs Argo Workflows' CRDs in the cluster (Kubeflow Pipelines ships them)."""
    from kfloop.pipelines.schedules import build_schedules

    cfg = load(config)
    require_role(cfg, "deploy")
    objects = [cron.to_dict() for cron in build_schedules(cfg).values()]
    apply_and_report(
        objects,
        namespace=cfg.cluster.namespace,
        dry_run=dry_run,
        server_dry_run=server_dry_run,
        kubeconfig=kubeconfig,
        context=context,
        # its own field manager: the chart's copies (kfloop deploy) carry release labels this one does not own
        field_manager="kfloop-schedules",
    )
