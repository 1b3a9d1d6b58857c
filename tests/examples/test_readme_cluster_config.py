"""The cluster config the README shows is the demo's own: it loads, and it is the same config."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from kfloop.config import load_config
from tests.conftest import REPO


def test_the_readme_cluster_config_is_the_demos(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(extends: kfloop\.yaml\nstorage:\n  type: s3\n.*?)```", readme, re.S)
    assert block, "README: the cluster config block is gone"
    shutil.copy(REPO / "examples" / "fraud" / "kfloop.yaml", tmp_path / "kfloop.yaml")
    (tmp_path / "kfloop.cluster.yaml").write_text(block.group(1), encoding="utf-8")
    shown = load_config(tmp_path / "kfloop.cluster.yaml")
    demo = load_config(REPO / "examples" / "fraud" / "kfloop.cluster.yaml")
    assert shown.model_dump(exclude={"storage"}) == demo.model_dump(exclude={"storage"})
    assert shown.storage.model_dump(exclude={"root"}) == demo.storage.model_dump(exclude={"root"})
