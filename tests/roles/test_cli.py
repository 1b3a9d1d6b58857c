"""The CLI under roles: `kfloop models promote` and `rollback` refused for a viewer (exit 1, one line, audited,
the registry untouched) and done for an operator; `kfloop roles show|render`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop.audit import read
from kfloop.cli import app
from kfloop.registry import ModelRegistry
from kfloop.roles import REFUSED
from kfloop.storage import LocalStorage
from tests.roles.conftest import ME, config_file

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose registry has v1 (champion) and v2 (candidate)."""
    root = tmp_path_factory.mktemp("roles-cli")
    files = root / "model"
    files.mkdir()
    (files / "model.bin").write_bytes(b"placeholder weights")
    registry = ModelRegistry(LocalStorage(root / "ws"), MODEL)
    for _ in range(2):
        registry.register(files, {"framework": "torch", "task": "binary", "threshold": 0.5, "metrics": {}})
    registry.promote("v1", "first")
    return root


def _champion(root: Path) -> str:
    champion = ModelRegistry(LocalStorage(root / "ws"), MODEL).champion()
    assert champion is not None
    return champion.version


def _kfloop(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_viewer_cannot_promote_or_roll_back(root: Path) -> None:
    cfg = str(config_file(root / "viewer.yaml", root / "ws", "viewer"))
    code, out = _kfloop("models", "promote", "v2", "-c", cfg)
    assert code == 1, out
    assert f"{ME} may not promote: {ME} holds viewer (governance.roles); a role allowing it: ml-engineer, operator" in (
        " ".join(out.split())
    )
    code, out = _kfloop("models", "rollback", "-c", cfg)
    assert code == 1 and "may not rollback" in out, out
    assert _champion(root) == "v1"
    refused = read(LocalStorage(root / "ws"), actions=[REFUSED])
    assert [(r["actor"], r["subject"]["action"], r["details"]["roles"]) for r in refused][-2:] == [
        (ME, "promote", ["viewer"]),
        (ME, "rollback", ["viewer"]),
    ]


def test_an_operator_promotes_and_rolls_back(root: Path) -> None:
    cfg = str(config_file(root / "operator.yaml", root / "ws", "operator"))
    code, out = _kfloop("models", "promote", "v2", "-c", cfg)
    assert code == 0 and "v2 is now champion" in out, out
    assert _champion(root) == "v2"
    code, out = _kfloop("models", "rollback", "-c", cfg)
    assert code == 0 and "v1 is champion again" in out, out
    assert _champion(root) == "v1"


def test_without_roles_anyone_promotes(root: Path) -> None:
    cfg = str(config_file(root / "open.yaml", root / "ws", "none"))
    before = len(read(LocalStorage(root / "ws"), actions=[REFUSED]))
    code, out = _kfloop("models", "promote", "v2", "-c", cfg)
    assert code == 0, out
    assert _champion(root) == "v2"
    assert len(read(LocalStorage(root / "ws"), actions=[REFUSED])) == before
    code, out = _kfloop("roles", "show", "-c", cfg)
    assert code == 0 and "every command is allowed" in out


def test_roles_show_and_render(root: Path) -> None:
    cfg = str(config_file(root / "show.yaml", root / "ws", "ml-engineer"))
    code, out = _kfloop("roles", "show", "-c", cfg)
    assert code == 0, out
    assert f"{ME} (groups:" in out and "holds ml-engineer: read, run, promote, rollback" in " ".join(out.split())
    code, out = _kfloop("roles", "show", "-c", cfg, "--actor", "user:alice")
    assert "user:alice (groups: none) holds viewer: read" in " ".join(out.split()), out
    for bad in ("alice", "group:sre"):  # a member the CLI could never act as: named, not shown as "no role"
        code, out = _kfloop("roles", "show", "-c", cfg, "--actor", bad)
        assert code == 2 and "serviceaccount:<namespace>/<name>" in out and "--actor" in out, out
    code, out = _kfloop("roles", "render", "-c", cfg)
    assert code == 0, out
    assert out.count("\nkind: Role\n") == 3 and out.count("\nkind: RoleBinding\n") == 3
    assert "name: kfloop.fraud-demo.ml-engineer" in out and "feastPermissions:" in out


def test_a_viewer_cannot_run_ingest_or_deploy_anything(root: Path) -> None:
    """Every state-changing command checks the role before it changes anything (a run's gate promotes, so a
    caller who may not run never gets a champion promoted that way)."""
    cfg = str(config_file(root / "viewer-run.yaml", root / "ws", "viewer"))
    before = len(read(LocalStorage(root / "ws"), actions=[REFUSED]))
    commands = {
        ("run", "-c", cfg): "run",
        ("ingest", "-c", cfg): "run",
        ("validate", "-c", cfg): "run",
        ("features", "materialize", "-c", cfg): "run",
        ("schedules", "apply", "-c", cfg, "--dry-run"): "deploy",
    }
    for args, action in commands.items():
        code, out = _kfloop(*args)
        assert code == 1 and f"may not {action}" in out, (args, out)
    refused = read(LocalStorage(root / "ws"), actions=[REFUSED])[before:]
    assert [r["subject"]["action"] for r in refused] == list(commands.values())
