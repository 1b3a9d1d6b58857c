"""``kfloop report``: the periodic report of a model (HTML, its data as JSON, PDF on request), stored in the workspace
and sent to the alert webhooks; ``kfloop report pipeline``: the one-step KFP pipeline that makes it as an HTML
artifact in the Kubeflow UI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, credentials, err_console, handle_errors, load

if TYPE_CHECKING:
    from kfloop.report.publish import ReportResult

app = typer.Typer(invoke_without_command=True)


@app.callback()
@handle_errors
def report(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    model: Annotated[str, typer.Option("--model", help="The model; default: training.model_name.")] = "",
    period: Annotated[
        str, typer.Option("--period", help="How far back from now (a duration: 24h, 7d); default: report.period.")
    ] = "",
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the report's files into this local directory.")
    ] = None,
    pdf: Annotated[
        bool | None,
        typer.Option("--pdf/--no-pdf", help="Also print it to PDF with headless Chromium; default: report.pdf."),
    ] = None,
    send: Annotated[
        bool | None,
        typer.Option(
            "--send/--no-send",
            help="Send it to the alert webhooks that list the `report` event; default: report.send.",
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option("--prometheus", metavar="URL", help="Measure the SLOs from this Prometheus (else the workspace)."),
    ] = None,
) -> None:
    """The periodic report of a model: data volume and quality, feature freshness, model versions, drift episodes
    and retrains, SLO budgets.

    Writes reports/<model>/periodic/<id>.html (and .json; .pdf with --pdf) for the period ending now, points
    latest.json at it, and sends its summary to the webhooks. A failed delivery is logged, recorded and counted
    (kfloop_report_delivery_total), never an error: the report is stored either way."""
    if ctx.invoked_subcommand is not None:
        return
    from kfloop.report.publish import make_report
    from kfloop.report.render import summary_line
    from kfloop.storage import open_storage

    cfg = load(config)
    storage = open_storage(cfg.storage, credentials(cfg))  # not `workspace`: the report needs no Feast (4 s to import)
    result = make_report(
        cfg, storage, model=model or None, period=period or None, pdf=pdf, send=send, prometheus_url=prometheus
    )
    record = result.record
    if record["summary"]["empty"]:
        err_console.print(
            f"[yellow]warning:[/] nothing was recorded for model {escape(record['model'])} in the last "
            f"{escape(record['period']['length'])} (workspace {escape(record['workspace'])}): the report says so",
            highlight=False,
            soft_wrap=True,
        )
    problems = [p for part in ("data", "features", "models", "drift") for p in record[part]["problems"]]
    for p in problems:
        err_console.print(f"[yellow]warning:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if not record["slo"]["available"]:
        err_console.print(f"[yellow]note:[/] {escape(record['slo']['note'])}", highlight=False, soft_wrap=True)
    console.print(escape(summary_line(record)), highlight=False, soft_wrap=True)
    for ext, uri in result.uris.items():
        console.print(f"{ext:<5} {escape(uri)}", highlight=False, soft_wrap=True)
    if out is not None:
        _copy_out(result, out)
    if result.deliveries is None:
        return
    if not result.deliveries:
        console.print("not sent: no webhook of alerts.webhooks lists the report event")
    for d in result.deliveries:
        state = "[green]delivered[/]" if d.delivered else f"[red]not delivered[/] ({escape(d.error or '')})"
        console.print(f"alerts.webhooks.{d.webhook}: {state} after {d.attempts} attempt(s)", highlight=False)


def _copy_out(result: ReportResult, out: Path) -> None:
    """The report's files under ``out`` by their workspace names (``<id>.html`` …), each written atomically."""
    from kfloop.report.collect import record_json

    out.mkdir(parents=True, exist_ok=True)
    bodies = {"html": result.html.encode(), "json": record_json(result.record).encode(), "pdf": result.pdf or b""}
    for ext in result.keys:
        data = bodies[ext]
        path = out / f"{result.record['report_id']}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        console.print(f"wrote {escape(str(path))}", highlight=False)


@app.command("pipeline")
@handle_errors
def pipeline(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option("--out", help="Where to write the pipeline YAML.")] = Path(
        "pipelines/compiled/report.yaml"
    ),
) -> None:
    """Compile the report pipeline (one step, `<project>-report`) to KFP IR YAML: upload it in the Kubeflow UI and
    run it, or schedule it there as a recurring run; each run shows the report as an HTML artifact."""
    from kfloop.pipelines.report import compile_report

    cfg = load(config)
    path = compile_report(cfg, out, config_path=str(config))
    console.print(f"wrote {escape(str(path))} (image {escape(cfg.cluster.image)})", highlight=False)
