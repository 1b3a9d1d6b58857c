"""``kfloop models list|show|promote|rollback``: the model registry from the command line."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace
from kfloop.layout import decision_key

app = typer.Typer(help="Model registry: versions, stages, promotion and rollback.", no_args_is_help=True)
ModelOption = typer.Option("", "--model", help="Model name; default: training.model_name.")


def _registry(config_path, model: str):
    from kfloop.registry import ModelRegistry

    cfg = load(config_path)
    return ModelRegistry(workspace(cfg), model or cfg.training.model_name)


def _metric(card: dict, split: str, key: str) -> str:
    value = card.get("metrics", {}).get(split, {}).get(key)
    return f"{value:.4f}" if isinstance(value, float) else "-"


@app.command("list")
@handle_errors
def list_(config: ConfigOption = DEFAULT_CONFIG, model: str = ModelOption) -> None:
    """Every version with its stage, framework, validation metrics and creation time."""
    reg = _registry(config, model)
    t = Table(title=f"model {reg.model}")
    for col in ("version", "stage", "framework", "val ROC AUC", "val PR AUC", "training set", "created"):
        t.add_column(col)
    for mv in reg.list():
        stage = f"[bold green]{mv.stage}[/]" if mv.stage == "champion" else mv.stage
        t.add_row(
            mv.version,
            stage,
            mv.card.get("framework", "-"),
            _metric(mv.card, "validation", "roc_auc"),
            _metric(mv.card, "validation", "pr_auc"),
            escape(str(mv.card.get("training_set", {}).get("run_id"))),
            str(mv.card.get("created", "-"))[:19],
        )
    console.print(t)


@app.command("show")
@handle_errors
def show(version: str, config: ConfigOption = DEFAULT_CONFIG, model: str = ModelOption) -> None:
    """The full model card (JSON): metrics, hyperparameters, lineage, checksums, and the gate decision."""
    reg = _registry(config, model)
    mv = reg.get(version)
    body = {**mv.card, "stage": mv.stage}
    try:
        body["decision"] = json.loads(reg.storage.read_text(decision_key(reg.model, version)))
        body["decision"].pop("curves", None)
    except FileNotFoundError:
        body["decision"] = None
    typer.echo(json.dumps(body, indent=2, default=str))


@app.command("promote")
@handle_errors
def promote(
    version: str,
    config: ConfigOption = DEFAULT_CONFIG,
    model: str = ModelOption,
    reason: str = typer.Option("promoted by hand", help="Recorded in the registry history."),
) -> None:
    """Make VERSION the champion (the previous champion is archived)."""
    from kfloop.roles import authorize

    reg = _registry(config, model)
    authorize(load(config), reg.storage, "promote")  # governance.roles; refusals audited
    mv = reg.promote(version, reason)
    console.print(f"{escape(mv.model)} {mv.version} is now champion")


@app.command("rollback")
@handle_errors
def rollback(
    config: ConfigOption = DEFAULT_CONFIG,
    model: str = ModelOption,
    reason: str = typer.Option("rolled back by hand", help="Recorded in the registry history."),
) -> None:
    """Restore the previous champion (the current one is archived)."""
    from kfloop.roles import authorize

    reg = _registry(config, model)
    authorize(load(config), reg.storage, "rollback")  # governance.roles; refusals audited
    mv = reg.rollback(reason)
    console.print(f"{escape(mv.model)} {mv.version} is champion again")
