"""``kfloop retention apply``: remove what is past the periods of ``governance.retention``, with an audit record."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, credentials, handle_errors, load

app = typer.Typer(help="Retention periods of governance.retention, applied.", no_args_is_help=True)


@app.command("apply")
@handle_errors
def apply(
    config: ConfigOption = DEFAULT_CONFIG,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove and record nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Remove lake rows, inference-log rows, training sets, reports, quarantine and monitoring records older than
    their period (null: kept forever); print what went and append one `retention.apply` audit record."""
    from kfloop.retention import apply_retention, result_json
    from kfloop.roles import authorize
    from kfloop.storage import open_storage

    cfg = load(config)
    storage = open_storage(cfg.storage, credentials(cfg))
    if not dry_run:  # a dry run changes nothing: anyone may look
        authorize(cfg, storage, "retention")
    result = apply_retention(cfg, storage, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result_json(result), indent=2))
        return
    if not result.removed:
        console.print("no retention period is set (governance.retention): nothing removed")
        return
    verb = "would remove" if dry_run else "removed"
    for r in result.removed:
        rows = "" if r.rows is None else f"{r.rows:,} row(s), "
        kept = f"; kept {len(r.kept)} past the period: {', '.join(r.kept)}" if r.kept else ""
        line = f"{r.kind:<14} {r.dataset}: {verb} {rows}{r.files:,} file(s) older than {r.period} ({r.cutoff}){kept}"
        console.print(escape(line), highlight=False, soft_wrap=True)
    if result.audit is not None:
        console.print(f"audit record {result.audit['seq']} (retention.apply)", highlight=False)
