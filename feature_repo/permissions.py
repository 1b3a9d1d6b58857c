"""``governance.roles`` as Feast ``Permission`` objects, and the check that no registered Feast object is left
uncovered.

Why: Feast protects an object only when some permission matches it; a request no permission matches is refused,
and a registry with no permission at all lets every authenticated user do anything. So kfloop applies one
permission per configured role, matching every resource type and name of the project, with the Feast actions its
kfloop actions need (:data:`kfloop.roles.NEEDS`), and one deny-all for any Feast action no role is given.
Policies name the Kubernetes Roles the chart renders (:func:`kfloop.roles.role_name`): Feast's Kubernetes auth
takes a caller's roles from the RoleBindings naming them. The local provider does not enforce permissions (a
Feast feature server with ``auth: {type: kubernetes}`` does); :func:`coverage` still proves what would apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from feast import FeatureStore
from feast.feast_object import ALL_RESOURCE_TYPES, FeastObject
from feast.permissions.action import ALL_ACTIONS, AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy

from kfloop.config import Config
from kfloop.config.roles import NOBODY
from kfloop.roles import NEEDS, role_name

#: Tag on every permission kfloop applies: which ones it owns (and removes when roles change).
OWNER_TAG = "kfloop.project"
ROLE_TAG = "kfloop.role"


def feast_actions(actions: tuple[str, ...]) -> list[AuthzedAction]:
    """The Feast actions a set of kfloop actions needs, in Feast's order."""
    wanted = {a for action in actions for a in NEEDS[action].feast}
    return [a for a in ALL_ACTIONS if a.value in wanted]


def build_permissions(config: Config) -> list[Permission]:
    """One permission per role (every resource type, every name, its Feast actions, granted to its Kubernetes
    Role), plus a deny-all for actions no role has; none when no roles are configured."""
    roles = config.governance.roles
    if not roles.enabled:
        return []
    out, granted = [], set()
    for name, role in roles.roles.items():
        actions = feast_actions(role.allow)
        if not actions:  # e.g. a role that only promotes: nothing to do in Feast
            continue
        granted.update(actions)
        out.append(
            Permission(
                name=role_name(config.project, name),
                types=list(ALL_RESOURCE_TYPES),
                actions=actions,
                policy=RoleBasedPolicy(roles=[role_name(config.project, name)]),
                tags={OWNER_TAG: config.project, ROLE_TAG: name},
            )
        )
    rest = [a for a in ALL_ACTIONS if a not in granted]
    if rest:
        out.append(
            Permission(
                name=role_name(config.project, NOBODY),
                types=list(ALL_RESOURCE_TYPES),
                actions=rest,
                policy=RoleBasedPolicy(roles=[]),
                tags={OWNER_TAG: config.project, ROLE_TAG: NOBODY},
            )
        )
    return out


def stale_permissions(config: Config, store: FeatureStore) -> list[Permission]:
    """Permissions kfloop applied for this project that the config no longer produces (a role removed)."""
    wanted = {p.name for p in build_permissions(config)}
    return [
        p
        for p in store.list_permissions(tags={OWNER_TAG: config.project})
        if p.tags.get(OWNER_TAG) == config.project and p.name not in wanted
    ]


def unapplied_permissions(config: Config, store: FeatureStore) -> list[str]:
    """Names of the permissions the config produces that the registry lacks or holds differently."""
    applied = {p.name: p for p in store.list_permissions(tags={OWNER_TAG: config.project})}
    return [p.name for p in build_permissions(config) if applied.get(p.name) != p]


def drop_stale_permissions(config: Config, store: FeatureStore) -> list[str]:
    """Delete :func:`stale_permissions` from the registry; their names."""
    stale = stale_permissions(config, store)
    for permission in stale:
        store.registry.delete_permission(permission.name, store.project, commit=True)
    return [p.name for p in stale]


def registered_objects(store: FeatureStore) -> list[FeastObject]:
    """Every object registered in the store's project, of every type Feast can protect (what ``feast
    permissions check`` lists, plus the project itself)."""
    objects: list[FeastObject] = [p for p in store.list_projects() if p.name == store.project]
    objects += store.list_entities()
    objects += store.list_all_feature_views()
    objects += store.list_feature_services()
    objects += store.list_data_sources()
    objects += store.list_validation_references()
    objects += store.list_saved_datasets()
    objects += store.list_permissions()
    return objects


@dataclass(frozen=True)
class Covered:
    """One registered object: the permissions matching it, and the Feast actions no permission matches."""

    kind: str
    name: str
    permissions: tuple[str, ...]
    uncovered: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.permissions) and not self.uncovered


def coverage(store: FeatureStore, permissions: list[Permission] | None = None) -> list[Covered]:
    """Per registered object, the permissions that match it (Feast's own matching) and the actions none of them
    covers; ``permissions`` default to the registry's (what was applied)."""
    perms = store.list_permissions() if permissions is None else permissions
    out = []
    for obj in registered_objects(store):
        matching = [p for p in perms if p.match_resource(obj)]
        uncovered = [a.value for a in ALL_ACTIONS if not any(p.match_actions([a]) for p in matching)]
        out.append(Covered(type(obj).__name__, obj.name, tuple(p.name for p in matching), tuple(uncovered)))
    return out


__all__ = [
    "Covered",
    "build_permissions",
    "coverage",
    "drop_stale_permissions",
    "feast_actions",
    "registered_objects",
    "stale_permissions",
    "unapplied_permissions",
]
