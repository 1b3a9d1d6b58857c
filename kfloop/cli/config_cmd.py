"""``kfloop config validate|schema``."""

from __future__ import annotations

import json

import typer

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load
from kfloop.config import config_schema

app = typer.Typer(help="Validate kfloop.yaml or print its JSON Schema.", no_args_is_help=True)


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
