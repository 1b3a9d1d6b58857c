"""``kfloop chart``: the Helm chart helm/kfloop with values generated from kfloop.yaml (values, schema, render,
lint) and its kustomize form (manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load

app = typer.Typer(help="The Helm chart (helm/kfloop) and its kustomize form, from kfloop.yaml.", no_args_is_help=True)

ValuesOption = Annotated[
    list[Path] | None, typer.Option("--values", "-f", help="Values file over the generated values (repeatable).")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="One value (repeatable).")]
ChartOption = Annotated[Path | None, typer.Option("--chart", help="Chart directory; default: kfloop's helm/kfloop.")]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    console.print(f"wrote {escape(str(path))}")


@app.command("values")
@handle_errors
def values(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option(help="Write the values to this file; default: stdout.")] = None,
) -> None:
    """The chart values kfloop derives from the config (`generated`): install with
    `helm install kfloop helm/kfloop -n NAMESPACE -f VALUES`. Change the config, then generate them again."""
    from kfloop.kube.values import generated_values_text

    cfg = load(config)
    if out is not None:
        _write(out, generated_values_text(cfg, str(config)))
    else:
        typer.echo(generated_values_text(cfg, str(config)), nl=False)


@app.command("schema")
@handle_errors
def schema(
    out: Annotated[Path | None, typer.Option(help="Write values.schema.json here; default: stdout.")] = None,
) -> None:
    """The chart's values.schema.json (kfloop's config model included): Helm checks every install against it."""
    from kfloop.kube.schema import values_schema_text

    if out is None:
        typer.echo(values_schema_text(), nl=False)
    else:
        _write(out, values_schema_text())


@app.command("render")
@handle_errors
def render(
    config: ConfigOption = DEFAULT_CONFIG,
    values_file: ValuesOption = None,
    set_value: SetOption = None,
    release: Annotated[str, typer.Option(help="Release name.")] = "kfloop",
    chart: ChartOption = None,
) -> None:
    """Render the chart with the config's values, as `helm template` does (the test pod included)."""
    from kfloop.kube.chart import render_manifests

    cfg = load(config)
    manifests = render_manifests(
        cfg, values_files=values_file or (), set_values=set_value or (), release=release, chart_dir=chart
    )
    for path in sorted(manifests):
        text = manifests[path].strip()
        if path.endswith((".yaml", ".yml")) and text:
            typer.echo(f"---\n# Source: {path}\n{text}")


@app.command("lint")
@handle_errors
def lint(
    config: ConfigOption = DEFAULT_CONFIG,
    values_file: ValuesOption = None,
    set_value: SetOption = None,
    chart: ChartOption = None,
) -> None:
    """`helm lint --strict` of the chart with the config's values; exits 1 on any warning."""
    from kfloop.kube.chart import lint_chart, release_values

    cfg = load(config)
    values = release_values(cfg, values_file or (), set_value or ())
    found = lint_chart(values, chart_dir=chart)
    for line in found:
        console.print(escape(line), highlight=False)
    if found:
        raise typer.Exit(1)
    console.print("helm lint --strict: clean")


@app.command("manifests")
@handle_errors
def manifests(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option(help="The kustomize tree to (re)write.")] = Path("manifests"),
    chart: ChartOption = None,
) -> None:
    """Write the kustomize base (the chart's defaults) and overlays dev and prod (its ci values files)."""
    from kfloop.kube.manifests import write_tree

    paths = write_tree(load(config), out, chart)
    console.print(f"wrote {len(paths)} files under {escape(str(out))}")
