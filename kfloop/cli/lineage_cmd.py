"""``kfloop lineage``: where a model version's data came from, and which model versions a source file fed."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.tree import Tree

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace
from kfloop.errors import ModelNotFoundError

_LABEL = {
    "model": "model",
    "training_set": "training set",
    "feature_view": "feature view",
    "clean_dataset": "clean dataset",
    "contract": "contract",
    "raw_dataset": "raw dataset",
    "source_file": "source file",
}


def _label(node) -> str:  # node: kfloop.lineage.walk.Node
    version = f" [cyan]{escape(node.version[:16] if node.kind != 'model' else node.version)}[/]" if node.version else ""
    shown = {k: v for k, v in node.details.items() if v not in (None, "", [])}
    extra = ", ".join(f"{k}={escape(str(v))}" for k, v in shown.items())
    origin = " [yellow](from records)[/]" if node.origin == "records" else ""
    return f"[bold]{_LABEL.get(node.kind, node.kind)}[/] {escape(node.name)}{version}{origin}" + (
        f" [dim]{extra}[/]" if extra else ""
    )


def _tree(node, tree: Tree | None = None) -> Tree:
    branch = Tree(_label(node)) if tree is None else tree.add(_label(node))
    for child in node.children:
        _tree(child, branch)
    return branch


@handle_errors
def lineage(
    version: str = typer.Argument("", help="Model version to walk back from (e.g. v3); default: the served one."),
    model: str = typer.Option("", "--model", "-m", help="Model name (default: training.model_name)."),
    source: str = typer.Option(
        "", "--source", help="Walk forward instead: every model version this source file fed (path, URI or sha256)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the walk as JSON."),
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Walk the lineage recorded as OpenLineage events: back from a model version to its training set, feature
    views, clean dataset, contract and raw source files, or (--source) forward from a source file to the model
    versions it fed. Hops without events come from the workspace's records and say so."""
    from kfloop.lineage.walk import Walker
    from kfloop.registry import ModelRegistry

    cfg = load(config)
    storage = workspace(cfg)
    if source and version:
        raise typer.BadParameter("give a model version or --source, not both", param_hint="--source")
    walker = Walker(cfg, storage)
    if source:
        node = walker.forward(source)
    else:
        name = model or cfg.training.model_name
        if not version:
            champion = ModelRegistry(storage, name).champion()
            if champion is None:
                raise ModelNotFoundError(f"model {name!r} has no served version: name one (e.g. v1)")
            version = champion.version
        node = walker.back(name, version)
    if as_json:
        typer.echo(json.dumps(node.to_dict(), indent=2))
        return
    console.print(_tree(node))
    if source and not node.children:
        console.print(f"no model version was trained on data from {escape(source)}")
    index = walker.index
    records = sum(n.origin == "records" for n in node.walk())
    console.print(
        f"[dim]{index.files} runs in the lineage events; {records} of {len(node.walk())} nodes from the "
        "workspace's records[/]"
    )
