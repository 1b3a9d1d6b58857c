"""``kfloop features status|materialize``: the Feast side of the loop outside a pipeline."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import (
    DEFAULT_CONFIG,
    ConfigOption,
    console,
    handle_errors,
    load,
    require_role,
    spinner,
    workspace,
)

app = typer.Typer(help="Feast features: freshness status, compute + materialize.", no_args_is_help=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s"


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") + "Z" if iso else "-"


@app.command("status")
@handle_errors
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (for alerting)."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Exit 1 when any view is stale (for cron / probes), and send a freshness_breach notification "
        "(alerts.webhooks).",
    ),
    metrics: Path | None = typer.Option(
        None,
        "--metrics",
        help="Also write the freshness as Prometheus metrics to this file (for a textfile collector): "
        "kfloop_feature_freshness_lag_seconds, kfloop_feature_freshness_sla_seconds, kfloop_feature_stale.",
    ),
) -> None:
    """Per feature view: newest event offline and online, materialization lag, rows, SLA; how long after their
    events the last hour's values became available online (p50/p99, from the stream worker and the materialize
    stage) and the age of the newest value online."""
    from kfloop.feature_repo.status import feature_status
    from kfloop.layout import clean_dataset

    cfg = load(config)
    rows = feature_status(cfg, workspace(cfg), clean_dataset(cfg.source.dataset))
    if as_json:
        typer.echo(json.dumps([{**asdict(r), "stale": r.stale} for r in rows], indent=2))
    else:
        _print_status(cfg, rows)
    if metrics is not None:
        from datetime import UTC, datetime

        from kfloop.monitoring.event_metrics import freshness_metrics

        metrics.parent.mkdir(parents=True, exist_ok=True)
        tmp = metrics.with_name(metrics.name + ".tmp")  # a collector never reads half a file
        tmp.write_bytes(freshness_metrics(cfg.project, rows, datetime.now(UTC)))
        os.replace(tmp, metrics)
    if check and any(r.stale for r in rows):
        from kfloop.monitoring.notify import freshness_event, notify

        notify(cfg, freshness_event(cfg, rows), storage=workspace(cfg))  # never raises
        raise typer.Exit(1)


def _print_status(cfg, rows) -> None:
    """The status table (timestamps shortened to the second, UTC)."""
    t = Table(title=f"features ({cfg.features.online_store.type} online store, SLA {cfg.features.freshness_sla})")
    columns = ("view", "offline rows", "newest offline", "newest online", "entities online", "lag")
    for col in (*columns, "push lag p50/p99 (1h)", "online age", "status"):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = "[red]STALE[/]" if r.stale else "[green]fresh[/]"
        pushed = f"{_age(r.push_lag_p50)} / {_age(r.push_lag_p99)} ({r.pushed_events:,})" if r.pushed_events else "-"
        t.add_row(
            escape(r.view),
            f"{r.offline_rows:,}",
            _when(r.newest_offline),
            _when(r.newest_online),
            f"{r.online_entities:,}",
            _age(r.lag_seconds),
            pushed,
            _age(r.online_age_seconds),
            state,
        )
    console.print(t)


@app.command("materialize")
@handle_errors
def materialize(
    config: ConfigOption = DEFAULT_CONFIG,
    full: bool = typer.Option(False, "--full", help="Rewrite every entity online (e.g. after a wiped store)."),
) -> None:
    """Compute new feature rows from the clean dataset and materialize them into the online store."""
    from kfloop.components.features import compute_features
    from kfloop.components.materialize import materialize as run_materialize

    cfg = load(config)
    require_role(cfg, "run")
    storage = workspace(cfg)
    with spinner() as progress:
        progress.add_task("computing features and materializing", total=None)
        updates = compute_features(cfg, storage)
        written = run_materialize(cfg, storage, os.environ, full=full)
    for u, m in zip(updates, written, strict=True):
        removed = f", {u.rows_removed:,} replaced or removed" if u.rows_removed else ""
        deleted = f", {m.rows_deleted:,} entities deleted online" if m.rows_deleted else ""
        console.print(
            f"{escape(u.view)}: +{u.rows_added:,} offline rows{removed} ({u.offline_rows:,} total), "
            f"{m.rows_written:,} entity rows written online{deleted} in {m.seconds:.2f}s"
        )


@app.command("repo")
@handle_errors
def repo(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Path = typer.Option(Path("feature_repo/feature_store.yaml"), help="Where to write the Feast repo config."),
) -> None:
    """Render feature_store.yaml (for `feast apply` / `feast ui` in feature_repo/) from kfloop.yaml."""
    from kfloop.feature_repo.render import render_feature_store_yaml

    text = render_feature_store_yaml(load(config), str(config))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    console.print(f"wrote {escape(str(out))}")
