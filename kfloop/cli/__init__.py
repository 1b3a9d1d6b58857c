"""The ``kfloop`` command line (Typer). Heavy imports happen inside commands, so ``--help`` is fast."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kfloop import __version__
from kfloop._prometheus import drop_inherited_feast_dir
from kfloop.cli import (
    alerts_cmd,
    audit_cmd,
    catalog_cmd,
    chart_cmd,
    config_cmd,
    dashboard_cmd,
    data_cmd,
    deploy_cmd,
    features_cmd,
    forget_cmd,
    grafana_cmd,
    lineage_cmd,
    loop_cmd,
    models_cmd,
    monitor_cmd,
    pipeline_cmd,
    report_cmd,
    retention_cmd,
    roles_cmd,
    schedules_cmd,
    serve_cmd,
    serving_manifest_cmd,
    slo_cmd,
    stream_cmd,
    submit_cmd,
)
from kfloop.cli._common import State

app = typer.Typer(
    name="kfloop",
    help="The ML loop on Kubernetes: ingest → validate → features → train → evaluate → deploy → serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(chart_cmd.app, name="chart")
app.add_typer(config_cmd.app, name="config")
app.add_typer(features_cmd.app, name="features")
app.add_typer(models_cmd.app, name="models")
app.add_typer(monitor_cmd.app, name="monitor")
app.add_typer(schedules_cmd.app, name="schedules")
app.add_typer(slo_cmd.app, name="slo")
app.add_typer(stream_cmd.app, name="stream")
app.command("demo-data")(data_cmd.demo_data)
app.command("ingest")(data_cmd.ingest)
app.command("validate")(data_cmd.validate)
app.command("run")(pipeline_cmd.run)
app.command("loop")(loop_cmd.loop)
app.command("compile")(pipeline_cmd.compile_)
app.command("submit")(submit_cmd.submit)
app.command("deploy")(deploy_cmd.deploy)
app.command("inference-service")(serving_manifest_cmd.inference_service)
app.command("serve")(serve_cmd.serve)
app.command("dashboard")(dashboard_cmd.dashboard)
app.command("grafana")(grafana_cmd.grafana)
app.command("predict")(serve_cmd.predict)
app.command("serve-check")(serve_cmd.serve_check)
app.add_typer(report_cmd.app, name="report")
app.add_typer(catalog_cmd.app, name="catalog")
app.command("forget")(forget_cmd.forget)
app.command("lineage")(lineage_cmd.lineage)
app.add_typer(retention_cmd.app, name="retention")
app.add_typer(roles_cmd.app, name="roles")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kfloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    State.debug = debug


def main() -> None:
    """Console-script entrypoint. Commands run with a bare ``sys.argv`` (click gets the arguments directly):
    KServe parses ``sys.argv`` when a serving command first imports it, and our flags are not its flags."""
    drop_inherited_feast_dir()
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        app(args=argv[1:])
    finally:
        sys.argv = argv


__all__ = ["app", "main"]
