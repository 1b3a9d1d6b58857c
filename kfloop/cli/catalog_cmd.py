"""``kfloop catalog``: the project's datasets, feature views, feature services and models, with owner,
description, schema, freshness and quality score; stored as JSON and an HTML page. ``kfloop catalog pipeline``: the
one-step KFP pipeline that shows it as an HTML artifact in the Kubeflow UI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, credentials, handle_errors, load

app = typer.Typer(invoke_without_command=True)


@app.callback()
@handle_errors
def catalog(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON instead of a table.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write catalog.json and catalog.html into this local directory.")
    ] = None,
) -> None:
    """List every dataset (raw, clean, quarantine, attribute tables), feature view and service, and model with its
    versions: owner, description, schema, freshness and quality score. Also writes reports/catalog.{json,html} in
    the workspace (the page opens offline)."""
    if ctx.invoked_subcommand is not None:
        return
    from kfloop.catalog import catalog_json, make_catalog
    from kfloop.storage import open_storage

    cfg = load(config)
    storage = open_storage(cfg.storage, credentials(cfg))  # no Feast needed: state files and manifests only
    result = make_catalog(cfg, storage)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, body in (("catalog.json", catalog_json(result.record)), ("catalog.html", result.html)):
            tmp = out / f".{name}.tmp"
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(out / name)
    if as_json:
        typer.echo(catalog_json(result.record))
        return
    table = Table()
    for column in ("kind", "name", "owner", "schema", "freshness", "quality"):
        table.add_column(column, overflow="fold")  # names whole, also in a narrow terminal
    r = result.record
    for entry in [*r["datasets"], *r["feature_views"], *r["feature_services"], *r["models"]]:
        fresh = entry.get("freshness") or {}
        newest = fresh.get("newest_event") or fresh.get("newest_online") or fresh.get("last_change") or "-"
        q = entry.get("quality") or {}
        quality = "-" if q.get("score") is None else f"{q.get('metric', 'score')} {q['score']:.4g}"
        owner = entry.get("owner") or "[yellow]no owner[/]"
        cols = f"{len(entry.get('schema') or {})} col(s)"
        table.add_row(entry["kind"], escape(entry["name"]), escape(owner) if entry.get("owner") else owner, cols,
                      escape(str(newest)), escape(quality))  # fmt: skip
        for v in entry.get("versions", []):
            vq = v.get("quality") or {}
            score = "-" if vq.get("score") is None else f"{vq['metric']} {vq['score']:.4g}"
            table.add_row("  version", f"{escape(entry['name'])} {escape(v['version'])} ({v['stage']})", "", "",
                          escape(str(v.get("registered") or "-")), escape(score))  # fmt: skip
    console.print(table)
    for ext, uri in result.uris.items():
        console.print(f"{ext:<5} {escape(uri)}", highlight=False, soft_wrap=True)


@app.command("pipeline")
@handle_errors
def pipeline(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option("--out", help="Where to write the pipeline YAML.")] = Path(
        "pipelines/compiled/catalog.yaml"
    ),
) -> None:
    """Compile the catalog pipeline (one step, `<project>-catalog`) to KFP IR YAML: upload it in the Kubeflow UI and
    run it (or make it a recurring run there); each run shows the catalog page as an HTML artifact."""
    from kfloop.pipelines.catalog import compile_catalog

    cfg = load(config)
    path = compile_catalog(cfg, out, config_path=str(config))
    console.print(f"wrote {escape(str(path))} (image {escape(cfg.cluster.image)})", highlight=False)
