"""What the roles tests share: the demo config with three roles (the current login an operator or a viewer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfloop.audit import current_actor
from kfloop.config import Config, parse_config
from tests.conftest import DEMO_CONFIG, demo_config

ME = current_actor()  # the login this process runs as (the uid's account)


def roles(me_as: str | None = None) -> dict[str, Any]:
    """viewer (alice, the analysts group), ml-engineer (bob, a notebook's ServiceAccount), operator (the sre
    group); ``me_as`` adds the current login to that role."""
    spec: dict[str, Any] = {
        "viewer": {"members": ["user:alice", "group:analysts"], "allow": ["read"]},
        "ml-engineer": {
            "members": ["user:bob", "serviceaccount:team-a/notebook"],
            "allow": ["read", "run", "promote", "rollback"],
        },
        "operator": {"members": ["group:sre"], "allow": ["read", "deploy", "promote", "rollback", "forget"]},
    }
    if me_as is not None:
        spec[me_as]["members"].append(ME)
    return {"roles": spec}


def with_roles(config: Config, me_as: str | None = None) -> Config:
    data = config.model_dump(mode="json")
    data["governance"]["roles"] = roles(me_as)
    return parse_config(data, "roles test config")


def roles_config(root: Path, me_as: str | None = None) -> Config:
    """The demo on the workspace ``root`` with :func:`roles`."""
    return with_roles(demo_config(root), me_as)


def config_file(path: Path, root: Path, me_as: str | None) -> Path:
    """A kfloop.yaml extending the demo, on ``root``, with :func:`roles` (no roles when ``me_as`` is "none")."""
    import yaml

    body: dict[str, Any] = {"extends": str(DEMO_CONFIG), "storage": {"type": "local", "root": str(root)}}
    if me_as != "none":
        body["governance"] = {"roles": roles(me_as)}
    path.write_text(yaml.safe_dump(body))
    return path
