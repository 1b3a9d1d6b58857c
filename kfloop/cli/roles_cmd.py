"""``kfloop roles show|render|check``: who may do what (governance.roles), locally, in Feast and on a cluster."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace

app = typer.Typer(
    help="Roles (governance.roles): who may do what, and the RBAC/Feast objects they become.", no_args_is_help=True
)
_NONE = "no roles configured (governance.roles): every command is allowed"


@app.command("show")
@handle_errors
def show(
    config: ConfigOption = DEFAULT_CONFIG,
    actor: Annotated[
        str | None, typer.Option(help="Whose roles to resolve; default: you (user or ServiceAccount).")
    ] = None,
) -> None:
    """Each role with its members, allowed actions and Kubernetes Role; then which roles you hold here (your
    login and, for group: members, your operating-system groups) and what they allow."""
    import re

    from kfloop.audit import current_actor
    from kfloop.config.roles import MEMBER_PATTERN
    from kfloop.roles import allowed_actions, local_groups, role_name, roles_of

    if actor is not None and (actor.startswith("group:") or not re.match(MEMBER_PATTERN, actor)):
        raise typer.BadParameter(
            f"{actor!r} is not user:<login> or serviceaccount:<namespace>/<name>", param_hint="--actor"
        )
    cfg = load(config)
    roles = cfg.governance.roles
    if not roles.enabled:
        console.print(_NONE)
        return
    who = actor or current_actor()
    held = roles_of(roles, who)
    table = Table(title=f"roles of {cfg.project}")
    for col in ("role", "allows", "members", "Kubernetes Role / Feast policy role", "you"):
        table.add_column(col)
    for name, role in roles.roles.items():
        table.add_row(
            escape(name),
            ", ".join(role.allow),
            escape("\n".join(role.members) or "-"),
            escape(role_name(cfg.project, name)),
            "yes" if name in held else "",
        )
    console.print(table)
    groups = ", ".join(local_groups(who)) or "none"
    allows = ", ".join(allowed_actions(roles, held)) or "nothing that changes state"
    console.print(f"{escape(who)} (groups: {escape(groups)}) holds {escape(', '.join(held) or 'no role')}: {allows}")


@app.command("render")
@handle_errors
def render(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """The Kubernetes Roles/RoleBindings and the Feast permissions the roles become, as YAML (the chart
    renders the same RBAC with its labels: `kfloop chart render`)."""
    import yaml

    from kfloop.feature_repo.permissions import build_permissions
    from kfloop.kube.roles import rbac_objects

    cfg = load(config)
    if not cfg.governance.roles.enabled:
        console.print(_NONE)
        return
    docs = rbac_objects(cfg)
    docs.append(
        {
            "feastPermissions": [
                {
                    "name": p.name,
                    "types": "all" if len(p.types) > 1 else [t.__name__ for t in p.types],
                    "actions": [a.value for a in p.actions],
                    "roles": p.policy.get_roles(),
                }
                for p in build_permissions(cfg)
            ]
        }
    )
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@app.command("check")
@handle_errors
def check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Every Feast object registered in the workspace with the permissions matching it; exit 1 when any object
    (or any Feast action on it) is matched by none. The permissions are applied with the other Feast objects
    (`kfloop features materialize`, the pipeline's materialize step)."""
    from kfloop.feature_repo.permissions import coverage, stale_permissions, unapplied_permissions
    from kfloop.feature_repo.store import open_store

    cfg = load(config)
    if not cfg.governance.roles.enabled:
        console.print(f"{_NONE}; Feast has no permissions from kfloop")
        return
    store = open_store(cfg, workspace(cfg), os.environ)
    rows = coverage(store)
    table = Table(title="Feast objects and the permissions matching them")
    for col in ("type", "name", "permissions", "uncovered actions"):
        table.add_column(col)
    for row in rows:
        uncovered = ", ".join(row.uncovered) or "-"
        table.add_row(row.kind, escape(row.name), escape(", ".join(row.permissions) or "NONE"), uncovered)
    console.print(table)
    bad = [r for r in rows if not r.ok]
    outdated = unapplied_permissions(cfg, store) + [p.name for p in stale_permissions(cfg, store)]
    if outdated:
        console.print(
            f"registry differs from governance.roles ({escape(', '.join(outdated))}): apply with "
            "`kfloop features materialize`"
        )
        raise typer.Exit(1)
    if not rows:
        console.print("no Feast objects registered yet (run `kfloop features materialize`)")
    elif bad:
        console.print(f"{len(bad)} of {len(rows)} objects not fully covered: apply with `kfloop features materialize`")
        raise typer.Exit(1)
    else:
        console.print(f"all {len(rows)} Feast objects covered")
