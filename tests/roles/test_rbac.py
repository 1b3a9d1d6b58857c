"""governance.roles as Kubernetes RBAC: rendered by the real Helm engine, valid for the API server (strict
schemas), the same objects `kfloop roles render` prints, and what each role allows in Kubernetes terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kfloop.config import Config, load_config, parse_config
from kfloop.kube.chart import lint_chart, release_values, render_objects
from kfloop.kube.roles import rbac_objects, rules
from kfloop.kube.values import chart_values
from kfloop.roles import role_name
from tests.deploy import checks
from tests.roles.conftest import with_roles

CLUSTER = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "kfloop.cluster.yaml"
WRITE_VERBS = {"create", "update", "patch", "delete"}


@pytest.fixture(scope="module")
def config() -> Config:
    return with_roles(load_config(CLUSTER))


@pytest.fixture(scope="module")
def rbac(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's Roles and RoleBindings of governance.roles, by (kind, role)."""
    found = {}
    for obj in render_objects(config):
        if obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"].startswith("kfloop."):
            found[obj["kind"], obj["metadata"]["labels"]["kfloop.io/role"]] = obj
    return found


def test_each_role_renders_a_role_and_a_binding_valid_for_the_api_server(
    rbac: dict[tuple[str, str], dict[str, Any]], config: Config
) -> None:
    assert set(rbac) == {(kind, r) for kind in ("Role", "RoleBinding") for r in ("viewer", "ml-engineer", "operator")}
    checked = checks.validate_core(rbac.values(), "1.33")
    assert len(checked) == 6 and all(how.startswith("Kubernetes 1.33") for how in checked.values())
    for (kind, role), obj in rbac.items():
        assert obj["metadata"]["name"] == role_name(config.project, role) == f"kfloop.fraud-demo.{role}"
        assert obj["metadata"]["namespace"] == config.cluster.namespace
        if kind == "RoleBinding":
            assert obj["roleRef"]["name"] == f"kfloop.fraud-demo.{role}" and obj["roleRef"]["kind"] == "Role"


def test_members_become_subjects(rbac: dict[tuple[str, str], dict[str, Any]]) -> None:
    rbac_group = "rbac.authorization.k8s.io"
    assert rbac["RoleBinding", "viewer"]["subjects"] == [
        {"kind": "User", "apiGroup": rbac_group, "name": "alice"},
        {"kind": "Group", "apiGroup": rbac_group, "name": "analysts"},
    ]
    assert rbac["RoleBinding", "ml-engineer"]["subjects"] == [
        {"kind": "User", "apiGroup": rbac_group, "name": "bob"},
        {"kind": "ServiceAccount", "name": "notebook", "namespace": "team-a"},
    ]


def _verbs(role: dict[str, Any], group: str, resource: str) -> set[str]:
    return {v for r in role["rules"] if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_rules_follow_the_actions_table(rbac: dict[tuple[str, str], dict[str, Any]], config: Config) -> None:
    for (kind, role), obj in rbac.items():
        if kind == "Role":
            assert obj["rules"] == rules(config.governance.roles.roles[role].allow)
    viewer, engineer, operator = (rbac["Role", r] for r in ("viewer", "ml-engineer", "operator"))
    assert not {v for r in viewer["rules"] for v in r["verbs"]} & WRITE_VERBS  # read only
    assert _verbs(viewer, "", "pods/log") == {"get"}
    assert _verbs(viewer, "serving.kserve.io", "inferenceservices") == {"get", "list", "watch"}
    assert _verbs(viewer, "", "secrets") == set()
    assert {"patch", "update"} <= _verbs(engineer, "serving.kserve.io", "inferenceservices")  # promote, rollback
    assert "create" in _verbs(engineer, "argoproj.io", "workflows")  # run
    assert "create" not in _verbs(engineer, "serving.kserve.io", "inferenceservices")  # no deploy
    assert {"create", "delete"} <= _verbs(operator, "argoproj.io", "cronworkflows")  # deploy
    assert "create" in _verbs(operator, "serving.kserve.io", "inferenceservices")


def test_the_chart_and_kfloop_roles_render_agree(rbac: dict[tuple[str, str], dict[str, Any]], config: Config) -> None:
    plain = {(o["kind"], o["metadata"]["name"]): o for o in rbac_objects(config)}
    for (kind, _), obj in rbac.items():
        mine = plain.pop((kind, obj["metadata"]["name"]))
        assert {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "labels"}} == mine
    assert plain == {}


def test_a_role_without_members_gets_no_binding(config: Config) -> None:
    data = config.model_dump(mode="json")
    data["governance"]["roles"]["roles"]["auditor"] = {"allow": ["read"]}
    objects = rbac_objects(parse_config(data, "with a memberless role"))
    assert [o["kind"] for o in objects if o["metadata"]["name"].endswith(".auditor")] == ["Role"]


def test_without_roles_nothing_is_generated_and_the_chart_lints_with_roles(config: Config) -> None:
    assert "userRoles" not in chart_values(load_config(CLUSTER))["generated"]
    assert len(chart_values(config)["generated"]["userRoles"]) == 3
    assert lint_chart(release_values(config)) == []
