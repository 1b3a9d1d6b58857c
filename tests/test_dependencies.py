"""Honest dependencies, checked by deptry (configured in pyproject's [tool.deptry]).

Two runs: the whole tree, where tests/ and benchmarks/ may import the `dev` extra; and the runtime code alone
(kfloop/, components/, pipelines/, feature_repo/, serving/, monitoring/), where `dev` is the dev group, so a dev-only
import is DEP004. Every imported third-party package is declared (DEP001, DEP003), every declared one is imported
(DEP002) save the per-rule ignores, each with its reason in pyproject.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

RUNTIME_ONLY = ["--extend-exclude", "^(benchmarks|tests)/", "--optional-dependencies-dev-groups", "dev"]


def deptry(*args: str, root: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deptry", ".", "--no-ansi", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_whole_tree_declares_what_it_imports_and_imports_what_it_declares() -> None:
    result = deptry()
    assert result.returncode == 0, f"deptry found dependency issues:\n{result.stdout}\n{result.stderr}"


def test_runtime_code_imports_no_dev_only_package() -> None:
    result = deptry(*RUNTIME_ONLY)
    assert result.returncode == 0, f"deptry found dependency issues in runtime code:\n{result.stdout}\n{result.stderr}"


def test_runtime_run_flags_a_dev_only_import(tmp_path: Path) -> None:
    """The runtime run is not vacuous: a dev-only import in runtime code is DEP004, the same one in tests/ is not."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in ("serving", "tests"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
        (tmp_path / folder / "probe.py").write_text("import pandera\n")
    result = deptry(*RUNTIME_ONLY, root=tmp_path)
    issues = result.stdout + result.stderr
    assert "serving/probe.py:1:8: DEP004 'pandera'" in issues, issues
    assert "tests/probe.py" not in issues, issues
