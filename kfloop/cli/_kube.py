"""The cluster options and the apply-then-report step shared by ``kfloop deploy`` and ``kfloop schedules apply``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from kfloop.cli._common import console, err_console

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig file; default: $KUBECONFIG, then ~/.kube/config, else the pod's service account.",
    ),
]
ContextOption = Annotated[str | None, typer.Option("--context", help="kubeconfig context; default: its current one.")]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the objects as YAML, in apply order, and contact no cluster."),
]
ServerDryRunOption = Annotated[
    bool,
    typer.Option(
        "--server-dry-run",
        help="Send every apply with dryRun=All: the API server validates it and the summary says what would "
        "change; nothing is stored.",
    ),
]


def apply_and_report(
    objects: Sequence[dict],
    *,
    namespace: str,
    dry_run: bool,
    server_dry_run: bool,
    kubeconfig: Path | None,
    context: str | None,
    keep_live: Sequence[str] = (),
    field_manager: str | None = None,
) -> None:
    """``--dry-run``: the YAML on stdout (nothing else, so it pipes into ``kubectl apply -f -``). Otherwise
    server-side apply and a table of what each object did, with the totals."""
    from kfloop.kube.apply import apply_objects
    from kfloop.kube.connect import connect

    if dry_run and server_dry_run:
        raise typer.BadParameter("pass one of --dry-run and --server-dry-run", param_hint="--dry-run")
    if dry_run:
        report = apply_objects(objects, namespace=namespace, dry_run=True)
        typer.echo(report.manifest, nl=False)
        err_console.print(f"dry run: {len(report.results)} object(s) printed, nothing applied", highlight=False)
        return
    from kfloop.cli.summary import apply_table

    api = connect(kubeconfig, context)
    try:
        report = apply_objects(
            objects,
            namespace=namespace,
            server_dry_run=server_dry_run,
            api_client=api,
            keep_live=keep_live,
            **({"field_manager": field_manager} if field_manager else {}),
        )
    finally:
        api.close()
    console.print(apply_table(report))
    console.print(report.totals(), highlight=False, soft_wrap=True)
