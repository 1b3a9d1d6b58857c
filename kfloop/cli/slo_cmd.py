"""``kfloop slo status``: each service level indicator over ``slo.window`` and the error budget it leaves."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load

app = typer.Typer(help="Service level objectives: indicators and error budgets.", no_args_is_help=True)


def _ratio(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _budget(value: float | None) -> str:
    if value is None:
        return "-"
    style = "red" if value <= 0 else "yellow" if value < 0.25 else "green"
    return f"[{style}]{value * 100:.1f}%[/]"


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() or value >= 100 else f"{value:,.2f}"


@app.command("status")
@handle_errors
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus",
            envvar="KFLOOP_PROMETHEUS_URL",
            metavar="URL",
            help="Read the indicators from this Prometheus (its HTTP API's base URL); default: slo.prometheus_url, "
            "else the workspace's own records.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statuses as a JSON list.")] = False,
    fail_on_exhausted: Annotated[
        bool,
        typer.Option(
            "--fail-on-exhausted", help="Exit 3 when an objective's error budget is spent (at or below 0 left)."
        ),
    ] = False,
) -> None:
    """Each objective of `slo` over its window: the indicator (good / total), the error budget left and where
    the events were counted. Exit 0, or 3 with --fail-on-exhausted when a budget is spent (no data is not
    spent)."""
    from kfloop.cli._common import credentials
    from kfloop.slo.status import SLO_NAMES, slo_status
    from kfloop.storage import open_storage

    cfg = load(config)
    # the workspace as storage only: no Feast here (kfloop.cli._common.workspace would import it for its registry)
    statuses = slo_status(cfg, open_storage(cfg.storage, credentials(cfg)), prometheus_url=prometheus)
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        table = Table(title=f"service level objectives of {cfg.training.model_name} over {cfg.slo.window}")
        table.add_column("SLO", no_wrap=True, min_width=max(map(len, SLO_NAMES)))
        for col in ("objective", "SLI", "good / total", "budget left"):
            table.add_column(col, justify="right")
        table.add_column("source", no_wrap=True, min_width=len("prometheus"))
        for s in statuses:
            table.add_row(
                s.name,
                _ratio(s.objective, 2),
                _ratio(s.sli),
                f"{_count(s.good)} / {_count(s.total)}",
                _budget(s.budget_remaining),
                s.source,
            )
        console.print(table)
        for s in statuses:
            console.print(f"[bold]{s.name}[/]: {escape(s.detail)}", soft_wrap=True, highlight=False)
    if fail_on_exhausted and any(s.exhausted for s in statuses):
        raise typer.Exit(3)
