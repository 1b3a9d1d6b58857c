"""``kfloop forget KEY=VALUE``: erase one entity from every store, with a report and an audit record."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace


@handle_errors
def forget(
    entity: Annotated[str, typer.Argument(metavar="KEY=VALUE", help="An entity key of the config and its value.")],
    config: ConfigOption = DEFAULT_CONFIG,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be touched; change and record nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Remove one entity's rows and keys from the raw and clean lake, quarantine, offline features, the online
    store, the stream state, the inference log and training sets; record a tombstone (a later ingest drops its
    rows) and a `forget.erase` audit record holding a keyed hash of the value, never the value itself. Model
    versions trained on the erased data are listed, so you can decide to retrain."""
    from kfloop.forget import forget as run_forget
    from kfloop.forget import parse_target
    from kfloop.roles import authorize

    cfg = load(config)
    target = parse_target(cfg, entity)
    storage = workspace(cfg)
    authorize(cfg, storage, "forget")
    report = run_forget(cfg, storage, target, environ=os.environ, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    touched = [s for s in report.stores if s.touched]
    if not touched:
        console.print(f"{target.key}: no trace of this entity found in any store", highlight=False)
    for s in touched:
        parts = []
        if s.rows_removed and s.store != "online":
            parts.append(f"{s.rows_removed:,} row(s)")
        if s.files_rewritten:
            parts.append(f"{len(s.files_rewritten)} file(s) rewritten")
        if s.files_deleted:
            parts.append(f"{len(s.files_deleted)} file(s) deleted")
        if s.keys_deleted:
            parts.append(f"{s.keys_deleted:,} {'row(s)/key(s)' if s.store == 'online' else 'key(s)'}")
        console.print(escape(f"{s.store:<14} {s.name}: {verb} " + ", ".join(parts)), highlight=False, soft_wrap=True)
    for m in report.models:
        line = (
            f"trained on the erased data: {m['model']} {m['version']} ({m['stage']}) ← training set "
            f"{m['training_set_run']} ({m['training_set']}); retrain to drop the entity from the model"
        )
        console.print(escape(line), highlight=False, soft_wrap=True)
    if report.dry_run:
        console.print("dry run: nothing changed, nothing recorded", highlight=False)
    else:
        console.print(
            f"tombstone {report.tombstone}; audit record forget.erase (value as HMAC {report.value_hash[:16]}…); "
            f"{report.seconds:.2f}s",
            highlight=False,
            soft_wrap=True,
        )
