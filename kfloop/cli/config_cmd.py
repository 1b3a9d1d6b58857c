"""``kfloop config validate|schema|reference``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, err_console, handle_errors, load
from kfloop.config import config_schema

app = typer.Typer(help="Validate kfloop.yaml, print its JSON Schema or its Markdown reference.", no_args_is_help=True)


@app.command("validate")
@handle_errors
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Load the config and report every problem with its key path."""
    cfg = load(config)
    console.print(f"[green]ok[/]: {config} (project {cfg.project}, storage {cfg.storage.type})")


@app.command("schema")
@handle_errors
def schema() -> None:
    """Print the JSON Schema of kfloop.yaml (for editors and CI checks)."""
    typer.echo(json.dumps(config_schema(), indent=2))


def _note(text: str) -> None:
    err_console.print(escape(text), highlight=False, soft_wrap=True)


@app.command("reference")
@handle_errors
def reference(
    write: Annotated[
        Path | None,
        typer.Option(
            "--write", help="Replace the block between the config-reference markers in this file (e.g. README.md)."
        ),
    ] = None,
    check: Annotated[
        Path | None, typer.Option("--check", help="Exit 1 when this file's block differs from the generated one.")
    ] = None,
) -> None:
    """Print every key of kfloop.yaml as Markdown tables (type, default, description), generated from the
    config models."""
    from kfloop.config.reference import REGENERATE, render_reference, write_reference
    from kfloop.docs import stale_blocks
    from kfloop.errors import ConfigError

    if write is None and check is None:
        typer.echo(render_reference(), nl=False)
        return
    try:
        if write is not None:
            changed = write_reference(write)
            _note(f"{write}: config reference {'updated' if changed else 'already current'}")
        if check is not None and stale_blocks(check, ("config-reference",)):
            _note(f"{check}: the config reference is stale; regenerate it with: {REGENERATE}")
            raise typer.Exit(1)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{write or check}: {err}") from err
