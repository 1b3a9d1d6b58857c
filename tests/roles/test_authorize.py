"""The CLI's check: allowed actions pass, others raise PermissionDenied and are audited as role.refused; with no
roles everything passes and nothing is written; membership through users, ServiceAccounts and groups."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from kfloop.audit import read, verify
from kfloop.config import parse_config
from kfloop.config.roles import ACTIONS
from kfloop.errors import ConfigError, PermissionDenied, status_of
from kfloop.roles import NEEDS, REFUSED, allowed_actions, authorize, local_groups, roles_of
from kfloop.storage import LocalStorage
from tests.conftest import demo_config
from tests.roles.conftest import ME, roles_config


def test_no_roles_allows_everything_and_writes_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    config = demo_config(tmp_path)
    assert not config.governance.roles.enabled
    for action in ACTIONS:
        assert authorize(config, storage, action) == ME
        assert authorize(config, storage, action, actor="user:anyone") == "user:anyone"
    assert read(storage) == []


def test_allowed_actions_pass_and_a_refusal_is_audited(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    config = roles_config(tmp_path, me_as="operator")
    for action in ("read", "deploy", "promote", "rollback", "forget"):
        assert authorize(config, storage, action) == ME
    assert read(storage) == []
    with pytest.raises(PermissionDenied) as refused:
        authorize(config, storage, "retention")
    message = str(refused.value)
    assert ME in message and "retention" in message and "holds operator" in message and "no role allows it" in message
    with pytest.raises(PermissionDenied, match=r"holds no role.*a role allowing it: ml-engineer"):
        authorize(config, storage, "run", actor="user:mallory")
    records = read(storage, actions=[REFUSED])
    assert [(r["actor"], r["subject"], r["details"]) for r in records] == [
        (ME, {"action": "retention"}, {"roles": ["operator"]}),
        ("user:mallory", {"action": "run"}, {"roles": []}),
    ]
    assert verify(storage).ok


def test_the_environment_cannot_name_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$USER/$LOGNAME are anyone's to set: the actor is the account the process runs as, so a viewer cannot pass
    as an operator (nor an operator be refused, or recorded, as a viewer) by setting them."""
    storage = LocalStorage(tmp_path)
    config = roles_config(tmp_path, me_as="ml-engineer")
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "alice")  # alice is a viewer
    assert ME != "user:alice"
    assert authorize(config, storage, "promote") == ME
    assert read(storage) == []


def test_members_are_users_service_accounts_and_groups(tmp_path: Path) -> None:
    roles = roles_config(tmp_path).governance.roles
    assert roles_of(roles, "user:alice") == ["viewer"]
    assert roles_of(roles, "serviceaccount:team-a/notebook") == ["ml-engineer"]
    assert roles_of(roles, "serviceaccount:team-b/notebook") == []
    assert roles_of(roles, "user:carol", groups=["sre", "analysts"]) == ["viewer", "operator"]
    assert allowed_actions(roles, ["viewer", "ml-engineer"]) == ["read", "run", "promote", "rollback"]
    # a ServiceAccount is in its namespace's Kubernetes groups, as on a cluster
    assert local_groups("serviceaccount:team-a/notebook") == ["system:serviceaccounts", "system:serviceaccounts:team-a"]


def test_local_groups_are_the_users_operating_system_groups(tmp_path: Path) -> None:
    primary = grp.getgrgid(os.getgid()).gr_name
    assert primary in local_groups(ME)
    data = roles_config(tmp_path).model_dump(mode="json")
    data["governance"]["roles"]["roles"]["operator"]["members"] = [f"group:{primary}"]
    config = parse_config(data, "roles test config")
    storage = LocalStorage(tmp_path)
    assert authorize(config, storage, "forget") == ME


def test_refusal_is_one_clear_cli_error() -> None:
    status = status_of(PermissionDenied)
    assert (status.http, status.grpc, status.exit_code) == (403, "PERMISSION_DENIED", 1)


def test_unknown_action_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown action 'erase'"):
        authorize(demo_config(tmp_path), LocalStorage(tmp_path), "erase")


def test_every_action_has_kubernetes_and_feast_needs() -> None:
    assert set(NEEDS) == set(ACTIONS)
    assert all(NEEDS[a].rules for a in ACTIONS)


@pytest.mark.parametrize(
    ("roles", "where"),
    [
        ({"viewer": {"members": ["alice"], "allow": ["read"]}}, "members.0: 'alice' is not user:"),
        ({"viewer": {"members": ["serviceaccount:ns"], "allow": ["read"]}}, "serviceaccount:ns"),
        ({"viewer": {"members": [], "allow": ["erase"]}}, "allow.0"),
        ({"viewer": {"members": [], "allow": []}}, "allow"),
        ({"Viewer": {"members": [], "allow": ["read"]}}, "'Viewer': a role name must be a DNS label"),
        ({"nobody": {"members": [], "allow": ["read"]}}, "'nobody' is reserved"),
    ],
)
def test_bad_roles_are_named(tmp_path: Path, roles: dict, where: str) -> None:
    data = demo_config(tmp_path).model_dump(mode="json")
    data["governance"]["roles"] = {"roles": roles}
    with pytest.raises(ConfigError, match=r"governance\.roles") as err:
        parse_config(data, "kfloop.yaml")
    assert where in str(err.value)
