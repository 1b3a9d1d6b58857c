"""Who may do what locally: the CLI's check of ``governance.roles`` before a state change.

Why: the same role definition that becomes the cluster's RBAC (:mod:`kfloop.kube.roles`) and Feast permissions
(:mod:`feature_repo.permissions`) must also hold on a workstation, where the CLI writes the workspace directly.
With no roles configured everything is allowed (the behaviour before roles existed). A refusal raises
:class:`~kfloop.errors.PermissionDenied` and is appended to the audit trail as ``role.refused``.

This is a guard against mistakes by honest users, not a security boundary: whoever can edit the config or the
workspace files can change either. On a cluster, Kubernetes RBAC is what enforces.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from kfloop.audit import append, current_actor
from kfloop.config import Config
from kfloop.config.roles import ACTIONS, Role, RolesConfig
from kfloop.errors import PermissionDenied
from kfloop.storage.base import Storage

#: The audit action of a refusal.
REFUSED = "role.refused"


@dataclass(frozen=True)
class Needs:
    """What one kfloop action needs on a cluster: Kubernetes rules ``(apiGroup, resource, verbs)`` in the
    release's namespace, and Feast actions (``feast.permissions.action.AuthzedAction`` values) on every Feast
    object of the project."""

    rules: tuple[tuple[str, str, tuple[str, ...]], ...]
    feast: tuple[str, ...]


_READ = ("get", "list", "watch")
_KFP = "pipelines.kubeflow.org"
#: The one table: each action of the vocabulary (:data:`kfloop.config.roles.ACTIONS`) in Kubernetes and Feast
#: terms. ``read`` covers what the chart installs, the InferenceService, the workflows, the pods' logs and the
#: Kubeflow Pipelines runs; the state changes add only the verbs their command uses. The model registry and the
#: workspace live in S3: promote and rollback also need the object store's write access, which RBAC cannot give.
NEEDS: dict[str, Needs] = {
    "read": Needs(
        rules=(
            ("", "configmaps", _READ),
            ("", "services", _READ),
            ("", "serviceaccounts", _READ),
            ("", "pods", _READ),
            ("", "pods/log", ("get",)),
            ("", "events", _READ),
            ("apps", "deployments", _READ),
            ("policy", "poddisruptionbudgets", _READ),
            ("networking.k8s.io", "networkpolicies", _READ),
            ("monitoring.coreos.com", "servicemonitors", _READ),
            ("monitoring.coreos.com", "prometheusrules", _READ),
            ("serving.kserve.io", "inferenceservices", _READ),
            ("argoproj.io", "workflows", _READ),
            ("argoproj.io", "cronworkflows", _READ),
            (_KFP, "runs", ("get", "list")),
            (_KFP, "experiments", ("get", "list")),
            (_KFP, "pipelines", ("get", "list")),
        ),
        feast=("describe", "read_online", "read_offline"),
    ),
    "run": Needs(
        rules=(
            ("argoproj.io", "workflows", ("create",)),
            (_KFP, "runs", ("create", "get", "list")),
            (_KFP, "experiments", ("create", "get", "list")),
            (_KFP, "pipelines", ("create", "get", "list")),
            (_KFP, "pipelines/versions", ("create", "get", "list")),
        ),
        feast=("describe", "read_offline", "write_online", "write_offline"),
    ),
    "promote": Needs(rules=(("serving.kserve.io", "inferenceservices", ("get", "patch", "update")),), feast=()),
    "rollback": Needs(rules=(("serving.kserve.io", "inferenceservices", ("get", "patch", "update")),), feast=()),
    "deploy": Needs(
        rules=(
            ("serving.kserve.io", "inferenceservices", ("get", "create", "update", "patch", "delete")),
            ("argoproj.io", "cronworkflows", ("get", "create", "update", "patch", "delete")),
            ("", "configmaps", ("get", "create", "update", "patch")),
            ("apps", "deployments", ("get", "patch")),
        ),
        feast=("describe", "create", "update", "delete"),
    ),
    "forget": Needs(
        rules=(("argoproj.io", "workflows", ("create", "get")), ("", "pods/log", ("get",))),
        feast=("describe", "read_online", "read_offline", "write_online", "write_offline"),
    ),
    "retention": Needs(
        rules=(("argoproj.io", "workflows", ("create", "get")), ("argoproj.io", "cronworkflows", ("get", "patch"))),
        feast=("describe", "read_offline", "write_offline"),
    ),
}
assert set(NEEDS) == set(ACTIONS), "every action of the vocabulary needs a row in NEEDS"


def role_name(project: str, role: str) -> str:
    """The Kubernetes Role (and RoleBinding) of a kfloop role: ``kfloop.<project>.<role>``. Feast's Kubernetes
    auth names a user's roles by the Roles bound to them, so the Feast permissions name these too; the dots
    keep them apart from every name the chart derives from its release (DNS labels, no dots)."""
    return f"kfloop.{project}.{role}"


def local_groups(actor: str) -> list[str]:
    """``group:<name>`` members the actor is in locally: a user's operating-system groups; a ServiceAccount's
    Kubernetes groups (``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``)."""
    kind, _, name = actor.partition(":")
    if kind == "serviceaccount":
        namespace = name.partition("/")[0]
        return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if kind != "user":
        return []
    try:
        entry = pwd.getpwnam(name)
        gids = os.getgrouplist(name, entry.pw_gid)
    except (KeyError, OSError):
        return []
    names = []
    for gid in gids:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return sorted(set(names))


def _holds(role: Role, actor: str, groups: Iterable[str]) -> bool:
    wanted = {actor, *(f"group:{g}" for g in groups)}
    return any(member in wanted for member in role.members)


def roles_of(roles: RolesConfig, actor: str, groups: Iterable[str] | None = None) -> list[str]:
    """Names of the roles ``actor`` holds, directly or through a group (``groups``: default its local ones)."""
    held = local_groups(actor) if groups is None else list(groups)
    return [name for name, role in roles.roles.items() if _holds(role, actor, held)]


def allowed_actions(roles: RolesConfig, held: Iterable[str]) -> list[str]:
    """Actions the named roles allow together, in vocabulary order."""
    union = {a for name in held for a in roles.roles[name].allow}
    return [a for a in ACTIONS if a in union]


def authorize(config: Config, storage: Storage, action: str, *, actor: str | None = None) -> str:
    """Return the actor when ``action`` is allowed; else audit ``role.refused`` and raise PermissionDenied.

    ``actor`` defaults to :func:`~kfloop.audit.current_actor` (the ServiceAccount in a pod, else the login)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; the actions are {', '.join(ACTIONS)}")
    who = actor or current_actor()
    roles = config.governance.roles
    if not roles.enabled:
        return who
    held = roles_of(roles, who)
    if action in allowed_actions(roles, held):
        return who
    append(storage, REFUSED, {"action": action}, {"roles": held}, actor=who)
    holders = [name for name, role in roles.roles.items() if action in role.allow]
    has = f"holds {', '.join(held)}" if held else "holds no role"
    needs = f"a role allowing it: {', '.join(holders)}" if holders else "no role allows it"
    raise PermissionDenied(f"{who} may not {action}: {who} {has} (governance.roles); {needs}")


__all__ = ["NEEDS", "REFUSED", "Needs", "allowed_actions", "authorize", "local_groups", "role_name", "roles_of"]
