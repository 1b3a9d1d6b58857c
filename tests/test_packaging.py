"""The wheel holds every subpackage under `kfloop.` and nothing at the top level but `kfloop`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kfloop.config import load_config
from tests.conftest import DEMO_CONFIG

SUBPACKAGES = [
    "components",
    "pipelines",
    "feature_repo",
    "serving",
    "monitoring",
    "config",
    "storage",
    "sources",
    "cli",
    "demo",
]


@pytest.fixture(scope="module")
def installed(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without dependencies) into a folder of its own, for PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(project_wheel)],
        check=True,
        timeout=300,
    )
    return target


@pytest.mark.slow
def test_wheel_contains_and_imports_every_subpackage(project_wheel: Path, installed: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(project_wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"kfloop"}, f"top-level packages besides kfloop: {tops - {'kfloop'}}"
    for sub in SUBPACKAGES:
        assert f"kfloop/{sub}/__init__.py" in names, sub
    target = installed
    code = (
        f"import importlib, kfloop; assert kfloop.__file__.startswith({str(target)!r}), kfloop.__file__\n"
        f"for s in {SUBPACKAGES!r}: importlib.import_module('kfloop.' + s)\n"
        "from kfloop.components.ingest import ingest\nprint('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.slow
def test_feast_repo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """Outside the source tree: a Feast repo folder whose one Python file star-imports kfloop's repo
    module finds kfloop.yaml in the project folder, and `feast apply` registers the config's views."""
    project = tmp_path / "project"
    repo = project / "feast_repo"
    repo.mkdir(parents=True)
    shutil.copy(DEMO_CONFIG, project / "kfloop.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFLOOP_", "PYTHON"))}
    env.update(PYTHONPATH=str(installed), HOME=str(tmp_path), FEAST_USAGE="False")

    def run(*args: str, cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env={**env, **(extra or {})}, capture_output=True, text=True, timeout=180, check=False
        )

    rendered = run(
        sys.executable, "-m", "kfloop", "features", "repo", "--out", "feast_repo/feature_store.yaml", cwd=project
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    (repo / "features.py").write_text(
        "import kfloop.feature_repo.repo as kfloop_repo\n"
        f"assert kfloop_repo.__file__.startswith({str(installed)!r}), kfloop_repo.__file__\n"
        "from kfloop.feature_repo.repo import *  # noqa: F403\n"
    )
    feast = str(Path(sys.executable).parent / "feast")
    applied = run(feast, "-c", str(repo), "apply", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert (project / ".kfloop" / "feast" / "registry.db").is_file()
    listed = run(feast, "-c", str(repo), "feature-views", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    config = load_config(DEMO_CONFIG)
    for view in config.features.views:
        assert view.name in listed.stdout

    # the config named by $KFLOOP_CONFIG, from any folder
    probe = "import kfloop.feature_repo.repo as r; print(r.__file__); print(' '.join(r.__all__))"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = run(sys.executable, "-c", probe, cwd=elsewhere, extra={"KFLOOP_CONFIG": str(project / "kfloop.yaml")})
    assert imported.returncode == 0, imported.stderr[-2000:]
    where, names = imported.stdout.strip().splitlines()
    assert where.startswith(str(installed))
    assert {v.name for v in config.features.views} <= set(names.split())

    # no config anywhere: a clear error, and no folder created
    bare = tmp_path / "bare" / "repo"
    bare.mkdir(parents=True)
    missing = run(sys.executable, "-c", probe, cwd=bare)
    assert missing.returncode != 0
    assert "no kfloop config for the Feast repo" in missing.stderr and "KFLOOP_CONFIG" in missing.stderr
    assert list(bare.parent.iterdir()) == [bare] and not any(bare.iterdir())
