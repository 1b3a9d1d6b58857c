"""governance.roles as Feast permissions, applied with the other Feast objects into a real registry: every
registered object (push sources and on-demand views added by hand included) is matched by a permission for every
Feast action, Feast's own enforcer grants each role what its kfloop actions need and nothing else, and removing a
role removes its permission."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from feast import FeatureStore, Field, PushSource, RequestSource
from feast.errors import FeastPermissionError
from feast.on_demand_feature_view import on_demand_feature_view
from feast.permissions.action import ALL_ACTIONS, AuthzedAction
from feast.permissions.enforcer import enforce_policy
from feast.permissions.user import User
from feast.types import Float64

from kfloop.components.materialize import apply_objects
from kfloop.config import Config, parse_config
from kfloop.feature_repo.permissions import build_permissions, coverage, unapplied_permissions
from kfloop.feature_repo.store import objects_for, open_store
from kfloop.roles import role_name
from kfloop.storage import LocalStorage
from tests.roles.conftest import roles_config

A = AuthzedAction


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, LocalStorage, FeatureStore]:
    """The demo's Feast objects and the roles' permissions applied; then a push source, a request source and an
    on-demand view registered by hand (kfloop does not make them; the permissions must cover them anyway)."""
    root = tmp_path_factory.mktemp("feast-roles")
    config, storage = roles_config(root), LocalStorage(root)
    store = open_store(config, storage, os.environ)
    apply_objects(config, storage, store)
    request = RequestSource(name="amount_request", schema=[Field(name="amount", dtype=Float64)])

    @on_demand_feature_view(sources=[request], schema=[Field(name="amount_x2", dtype=Float64)], mode="python")
    def amount_doubled(inputs: dict) -> dict:
        return {"amount_x2": [a * 2 for a in inputs["amount"]]}

    view = objects_for(config, storage).views[0]
    push = PushSource(name="customer_push", batch_source=view.batch_source)
    store.apply([request, push, amount_doubled])
    return config, storage, store


def test_every_registered_object_is_covered_for_every_action(
    workspace: tuple[Config, LocalStorage, FeatureStore],
) -> None:
    config, _, store = workspace
    rows = coverage(store)
    kinds = {r.kind for r in rows}
    assert {"Project", "Entity", "FeatureView", "OnDemandFeatureView", "FeatureService", "FileSource"} <= kinds
    assert {"PushSource", "RequestSource", "Permission"} <= kinds
    assert {r.name for r in rows} >= {"customer", "merchant", "customer_activity", "merchant_risk", "fraud_features"}
    uncovered = [r for r in rows if not r.ok]
    assert uncovered == [], uncovered
    names = {role_name(config.project, r) for r in ("viewer", "ml-engineer", "operator")}
    assert all(set(r.permissions) == names for r in rows)
    assert unapplied_permissions(config, store) == []


def test_coverage_reports_what_no_permission_matches(workspace: tuple[Config, LocalStorage, FeatureStore]) -> None:
    _, _, store = workspace
    viewer_only = [p for p in store.list_permissions() if p.name.endswith(".viewer")]
    rows = coverage(store, viewer_only)
    assert rows and not any(r.ok for r in rows)
    assert {r.uncovered for r in rows} == {("create", "update", "delete", "write_online", "write_offline")}
    assert coverage(store, []) and all(r.permissions == () for r in coverage(store, []))


def _allowed(store: FeatureStore, roles: list[str], action: AuthzedAction) -> bool:
    """Feast's own decision for a caller holding ``roles`` (Kubernetes Role names) on every registered view."""
    views = [*store.list_feature_views(), *store.list_on_demand_feature_views()]
    try:
        enforce_policy(store.list_permissions(), User("someone", roles=roles), views, [action])
    except FeastPermissionError:
        return False
    return True


def test_feast_grants_each_role_what_its_actions_need(workspace: tuple[Config, LocalStorage, FeatureStore]) -> None:
    config, _, store = workspace
    viewer, engineer, operator = (role_name(config.project, r) for r in ("viewer", "ml-engineer", "operator"))
    granted = {
        who: {a.value for a in ALL_ACTIONS if _allowed(store, roles, a)}
        for who, roles in {"viewer": [viewer], "engineer": [engineer], "operator": [operator], "none": []}.items()
    }
    assert granted["viewer"] == {"describe", "read_online", "read_offline"}
    assert granted["engineer"] == {"describe", "read_online", "read_offline", "write_online", "write_offline"}
    assert granted["operator"] == {a.value for a in ALL_ACTIONS}  # deploy + forget
    assert granted["none"] == set()
    # a push to both stores asks for both writes at once: one role must hold both
    both = [A.WRITE_ONLINE, A.WRITE_OFFLINE]
    enforce_policy(store.list_permissions(), User("e", roles=[engineer]), store.list_feature_views(), both)
    with pytest.raises(FeastPermissionError):
        enforce_policy(store.list_permissions(), User("v", roles=[viewer]), store.list_feature_views(), both)


def test_actions_no_role_has_are_refused_to_everyone(tmp_path: Path) -> None:
    data = roles_config(tmp_path).model_dump(mode="json")
    data["governance"]["roles"]["roles"] = {"viewer": {"members": ["user:alice"], "allow": ["read", "promote"]}}
    perms = {p.name: p for p in build_permissions(parse_config(data, "viewer only"))}
    assert set(perms) == {"kfloop.fraud-demo.viewer", "kfloop.fraud-demo.nobody"}
    nobody = perms["kfloop.fraud-demo.nobody"]
    assert {a.value for a in nobody.actions} == {"create", "update", "delete", "write_online", "write_offline"}
    assert nobody.policy.get_roles() == []


def test_removing_roles_removes_their_permissions(workspace: tuple[Config, LocalStorage, FeatureStore]) -> None:
    """Last in this module: it changes the registry."""
    config, storage, store = workspace
    data = config.model_dump(mode="json")
    del data["governance"]["roles"]["roles"]["operator"]
    fewer = parse_config(data, "operator removed")
    apply_objects(fewer, storage, store)
    assert sorted(p.name for p in store.list_permissions()) == [
        "kfloop.fraud-demo.ml-engineer",
        "kfloop.fraud-demo.nobody",  # create/update/delete: only the operator deployed
        "kfloop.fraud-demo.viewer",
    ]
    assert all(r.ok for r in coverage(store))
    none = parse_config({**data, "governance": {**data["governance"], "roles": {}}}, "no roles")
    assert build_permissions(none) == []
    apply_objects(none, storage, store)
    assert store.list_permissions() == []
