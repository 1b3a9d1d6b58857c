"""The wheel holds every subpackage under `kfloop.` and nothing at the top level but `kfloop`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

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


@pytest.mark.slow
def test_wheel_contains_and_imports_every_subpackage(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("kfloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"kfloop"}, f"top-level packages besides kfloop: {tops - {'kfloop'}}"
    for sub in SUBPACKAGES:
        assert f"kfloop/{sub}/__init__.py" in names, sub
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
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
