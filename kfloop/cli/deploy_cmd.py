"""``kfloop deploy``: the Helm chart helm/kfloop rendered from the config, then server-side applied."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, handle_errors, load, require_role
from kfloop.cli._kube import ContextOption, DryRunOption, KubeconfigOption, ServerDryRunOption, apply_and_report


@handle_errors
def deploy(
    config: ConfigOption = DEFAULT_CONFIG,
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", "-f", help="A Helm values file, as helm's -f (repeatable)."),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="A value over the values files, as helm's --set (repeatable)."),
    ] = None,
    release: Annotated[str, typer.Option(help="Helm release name, as in `helm install NAME`.")] = "kfloop",
    namespace: Annotated[
        str | None, typer.Option(help="Release namespace; default (and what the chart accepts): cluster.namespace.")
    ] = None,
    chart: Annotated[Path | None, typer.Option(help="Chart directory; default: the chart kfloop ships.")] = None,
    dry_run: DryRunOption = False,
    server_dry_run: ServerDryRunOption = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Render the Helm chart helm/kfloop from the config and server-side apply every object (field manager
    kfloop, in dependency order); prints what each one did. A second deploy changes 0 objects. An
    InferenceService that exists is kept (the pipeline's deploy step moves its version; a deploy never rolls a
    promotion back). Needs KServe and Argo Workflows installed; objects no longer rendered are not deleted."""
    from kfloop.kube.chart import render_objects  # here: it loads the Helm engine

    cfg = load(config)
    require_role(cfg, "deploy")
    objects = render_objects(  # in --namespace, else the config's (after any --set config.cluster.namespace)
        cfg,
        values_files=tuple(values or ()),
        set_values=tuple(set_values or ()),
        release=release,
        namespace=namespace,
        chart_dir=chart,
    )
    apply_and_report(
        objects,
        namespace=namespace or cfg.cluster.namespace,  # every rendered object names its own
        dry_run=dry_run,
        server_dry_run=server_dry_run,
        kubeconfig=kubeconfig,
        context=context,
        keep_live=("InferenceService",),
    )
