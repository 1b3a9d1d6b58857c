"""``kfloop monitor check``: drift of the served champion's traffic against its reference profile.

Exit codes, for schedulers and scripts: 0 no drift or insufficient data (never a trigger), 3 drift
(:data:`DRIFT_EXIT_CODE`), and an error's own code otherwise (1, or 2 for a config error or no champion).
"""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace

#: The exit code of a check whose verdict is drift: distinct from every error's (1, 2) and from success.
DRIFT_EXIT_CODE = 3

app = typer.Typer(help="Drift monitoring of the served champion.", no_args_is_help=True)


@app.command("check")
@handle_errors
def check(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the verdict record (JSON) instead of a summary."),
    retrain: bool | None = typer.Option(
        None,
        "--retrain/--no-retrain",
        help="Then decide on retraining (audited; see monitoring.retrain); default: monitoring.retrain.enabled.",
    ),
) -> None:
    """Drift of the champion's newest logged traffic against its reference; exit 0 no_drift or
    insufficient_data, 3 drift. The verdict and its metrics are stored under monitoring/<model>/."""
    from kfloop.cli.retrain_cmd import decide_and_print
    from kfloop.layout import drift_check_key
    from kfloop.monitoring.check import DRIFT
    from kfloop.monitoring.monitor import run_check

    cfg = load(config)
    storage = workspace(cfg)
    record = run_check(cfg, storage)
    if record["verdict"] == DRIFT:
        from kfloop.monitoring.notify import drift_event, notify

        notify(cfg, drift_event(record), storage=storage)  # never raises: a failed delivery is logged and recorded
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        _print(record, storage.uri(drift_check_key(record["model"], record["check_id"], "json")))
        if record.get("evidently"):  # a tested window: Evidently's HTML report of it (`kfloop dashboard`: the UI)
            console.print(f"Evidently report: {escape(storage.uri(record['evidently']['report']))}")
    if cfg.monitoring.retrain.enabled if retrain is None else retrain:
        decide_and_print(cfg, storage, record, config, quiet=as_json)
    if record["verdict"] == DRIFT:
        raise typer.Exit(DRIFT_EXIT_CODE)


def _print(record: dict, where: str) -> None:
    """The verdict, the tested columns (drifted first) and the window's failing contract checks."""
    window, drift, quality = record["window"], record["drift"], record["data_quality"]
    colour = {"drift": "red", "no_drift": "green"}.get(record["verdict"], "yellow")
    console.print(
        f"{escape(record['model'])} {record['model_version']}: [bold {colour}]{record['verdict']}[/] "
        f"({window['rows']} rows, {window['first'] or '-'} … {window['last'] or '-'})"
    )
    if drift.get("reason"):
        console.print(escape(drift["reason"]))
    if drift["columns"]:
        console.print(f"drifted share {drift['share']:.3f} (drift at ≥ {drift['drift_share']})")
        t = Table()
        for col in ("column", "stattest", "score", "threshold", "drifted"):
            t.add_column(col)
        for c in sorted(drift["columns"], key=lambda c: (not c["drifted"], c["column"])):
            name = c["column"] + (" (prediction)" if c["prediction"] else "")
            t.add_row(
                escape(name), c["stattest"], f"{c['score']:.4g}", f"{c['threshold']:.4g}", "yes" if c["drifted"] else ""
            )
        console.print(t)
    failed = [c for c in quality["checks"] if not c["passed"]]
    console.print(f"data quality {quality['score']:.2f} %" + (": " if failed else ""))
    for c in failed:
        console.print(f"  {escape(c['check'])}: {c['failed']} of {quality['rows']} rows ({escape(c['message'])})")
    console.print(f"verdict: {escape(where)}")


def _register() -> None:
    """The retrain entry points live in their own module; they are ``monitor`` subcommands."""
    from kfloop.cli import retrain_cmd

    app.command("retrain")(retrain_cmd.retrain)
    app.command("webhook")(retrain_cmd.webhook)


_register()
