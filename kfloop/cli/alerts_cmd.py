"""``kfloop alerts rules|send``: the project's Prometheus alert rules, and a notification sent by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load

app = typer.Typer(help="Alerts: Prometheus alert rules and webhook notifications.", no_args_is_help=True)

DEFAULT_RULES = Path("pipelines/compiled/alert-rules.yaml")


@app.command("rules")
@handle_errors
def rules(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option(help="Where to write the rule file; default: print it to stdout.")] = None,
) -> None:
    """Render the Prometheus alert rules (drift, retraining, gates, pipeline runs, feature freshness, serving
    latency and the availability SLO's burn rates) for the config's model; check them with `promtool check
    rules`."""
    from kfloop.monitoring.alert_rules import render_rules, write_rules

    cfg = load(config)
    if out is None:
        typer.echo(render_rules(cfg, str(config)), nl=False)
        return
    console.print(f"wrote {escape(str(write_rules(cfg, out, str(config))))}")


@app.command("send")
@handle_errors
def send(
    kind: Annotated[
        str,
        typer.Argument(
            help="drift, retrain_started, retrain_refused, gate_failed, pipeline_failed, freshness_breach or report."
        ),
    ],
    summary: Annotated[str, typer.Argument(help="The one-line message.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Send a notification to the webhooks of alerts.webhooks that list KIND (e.g. to test the endpoint);
    exit 1 when a webhook did not take it."""
    from kfloop.config.alerts import EVENT_KINDS
    from kfloop.monitoring.notify import Notification, notify

    if kind not in EVENT_KINDS:
        raise typer.BadParameter(f"{kind!r} is not one of {', '.join(EVENT_KINDS)}", param_hint="KIND")
    cfg = load(config)
    results = notify(cfg, Notification(kind, summary, model=cfg.training.model_name))
    if not results:
        console.print(f"no webhook of alerts.webhooks lists {kind}")
    for d in results:
        state = "[green]delivered[/]" if d.delivered else f"[red]not delivered[/] ({escape(d.error or '')})"
        console.print(f"alerts.webhooks.{d.webhook}: {state} after {d.attempts} attempt(s)")
    if any(not d.delivered for d in results):
        raise typer.Exit(1)
