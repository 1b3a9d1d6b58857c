"""The shipped Feast repo: generated feature_store.yaml files are current, and the feast CLI works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kfloop.config import load_config
from kfloop.feature_repo.render import render_feature_store_yaml
from tests.conftest import REPO

CASES = [
    ("examples/fraud/kfloop.yaml", "feature_repo/feature_store.yaml"),
    ("examples/fraud/kfloop.cluster.yaml", "feature_repo/cluster/feature_store.yaml"),
]


@pytest.mark.parametrize(("config", "committed"), CASES)
def test_committed_feature_store_yaml_is_current(config: str, committed: str) -> None:
    fresh = render_feature_store_yaml(load_config(REPO / config), config)
    assert (REPO / committed).read_text() == fresh, f"{committed} is stale: run `make compile`"


def test_cluster_repo_uses_redis_s3_and_env_secrets() -> None:
    text = (REPO / "feature_repo/cluster/feature_store.yaml").read_text()
    assert "connection_string: ${REDIS_CONNECTION_STRING}" in text
    assert "path: s3://kfloop/fraud-demo/feast/registry.db" in text


@pytest.mark.slow
def test_feast_apply_and_list_in_the_repo(tmp_path: Path) -> None:
    """As a Feast user would: `feast apply` in feature_repo/, then `feast feature-views list`."""
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    feast = str(Path(sys.executable).parent / "feast")
    env = {**os.environ, "KFLOOP_CONFIG": str(REPO / "examples/fraud/kfloop.yaml")}
    cwd = tmp_path / "feature_repo"
    applied = subprocess.run(
        [feast, "apply"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert (tmp_path / ".kfloop" / "feast" / "registry.db").is_file()
    listed = subprocess.run(
        [feast, "feature-views", "list"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    config = load_config(REPO / "examples/fraud/kfloop.yaml")
    for view in config.features.views:
        assert view.name in listed.stdout
    services = subprocess.run(
        [feast, "feature-services", "list"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert config.features.service in services.stdout
