"""``governance.roles`` as Kubernetes RBAC: one Role and one RoleBinding per kfloop role, in the chart.

Why generated here: what each kfloop action needs in Kubernetes terms is one table (:data:`kfloop.roles.NEEDS`);
the chart template (``helm/kfloop/templates/user-roles.yaml``) only writes out the rules and subjects computed
here (``generated.userRoles``), so the chart, the Feast permissions and the CLI cannot disagree.
"""

from __future__ import annotations

from typing import Any

from kfloop.config import Config
from kfloop.roles import NEEDS, role_name

_RBAC = "rbac.authorization.k8s.io"
#: Verbs in the order Kubernetes documents them (rules read the same way every time).
_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def rules(actions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The PolicyRules the actions need together: one rule per API group and verb set, resources sorted."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for action in actions:
        for group, resource, allowed in NEEDS[action].rules:
            verbs.setdefault((group, resource), set()).update(allowed)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), allowed in sorted(verbs.items()):
        ordered = tuple(v for v in _VERB_ORDER if v in allowed)
        by_verbs.setdefault((group, ordered), []).append(resource)
    return [
        {"apiGroups": [group], "resources": resources, "verbs": list(ordered)}
        for (group, ordered), resources in sorted(by_verbs.items())
    ]


def subject(member: str) -> dict[str, Any]:
    """A RoleBinding subject for ``user:<login>``, ``serviceaccount:<ns>/<name>`` or ``group:<name>``."""
    kind, _, name = member.partition(":")
    if kind == "serviceaccount":
        namespace, _, account = name.partition("/")
        return {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    return {"kind": "User" if kind == "user" else "Group", "apiGroup": _RBAC, "name": name}


def user_roles(config: Config) -> list[dict[str, Any]]:
    """``generated.userRoles``: per configured role its Role name, rules and RoleBinding subjects (empty when
    no roles are configured: the chart then renders none)."""
    return [
        {
            "name": role_name(config.project, name),
            "role": name,
            "rules": rules(role.allow),
            "subjects": [subject(m) for m in role.members],
        }
        for name, role in config.governance.roles.roles.items()
    ]


def rbac_objects(config: Config) -> list[dict[str, Any]]:
    """The Roles and RoleBindings as plain objects in ``cluster.namespace`` (``kfloop roles render`` without
    Helm; the chart renders the same from ``generated.userRoles``, with its labels)."""
    namespace = config.cluster.namespace
    out: list[dict[str, Any]] = []
    for entry in user_roles(config):
        meta = {"name": entry["name"], "namespace": namespace}
        out.append({"apiVersion": f"{_RBAC}/v1", "kind": "Role", "metadata": meta, "rules": entry["rules"]})
        if entry["subjects"]:
            out.append(
                {
                    "apiVersion": f"{_RBAC}/v1",
                    "kind": "RoleBinding",
                    "metadata": dict(meta),
                    "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": entry["name"]},
                    "subjects": entry["subjects"],
                }
            )
    return out


__all__ = ["rbac_objects", "rules", "subject", "user_roles"]
