"""The workspace a Feast repo folder serves, for the ``feast`` CLI (``feast apply`` / ``feast ui``).

Feast runs a repo's Python files from the repo folder (the one with ``feature_store.yaml``). Its kfloop
config is ``$KFLOOP_CONFIG``, else ``kfloop.yaml`` in the repo folder or its parent (the project folder),
else, for this source tree's own ``feature_repo/``, the demo config; otherwise a ``ConfigError`` says so.
The workspace is the config's ``storage.root`` under the repo folder's parent, where the rendered
``feature_store.yaml`` puts Feast's files (``../<root>/feast``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kfloop.config import Config, load_config
from kfloop.errors import ConfigError
from kfloop.storage import LocalStorage

CONFIG_ENV = "KFLOOP_CONFIG"
CONFIG_NAME = "kfloop.yaml"
_SOURCE_REPO = Path(__file__).resolve().parent  # feature_repo/ when this is a source checkout
_SOURCE_DEMO = _SOURCE_REPO.parent / "examples" / "fraud" / "kfloop.yaml"


def config_path(repo_dir: Path, environ: Mapping[str, str]) -> Path:
    """The kfloop config the Feast repo in ``repo_dir`` is built from."""
    if environ.get(CONFIG_ENV):
        return repo_dir / environ[CONFIG_ENV]
    for candidate in (repo_dir / CONFIG_NAME, repo_dir.parent / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    if repo_dir.resolve() == _SOURCE_REPO and _SOURCE_DEMO.is_file():
        return _SOURCE_DEMO
    raise ConfigError(
        f"no kfloop config for the Feast repo in {repo_dir}: set ${CONFIG_ENV}, or put {CONFIG_NAME} beside "
        "feature_store.yaml or in its parent folder"
    )


def repo_workspace(repo_dir: Path, environ: Mapping[str, str]) -> tuple[Config, LocalStorage]:
    """The config and the local workspace the Feast repo in ``repo_dir`` serves."""
    config = load_config(config_path(repo_dir, environ))
    if config.storage.type != "local":
        raise ConfigError(
            "storage.type: the feast CLI repo serves the embedded (local) workspace; on a cluster kfloop "
            "applies the definitions itself (`kfloop features`, the materialize step)"
        )
    return config, LocalStorage(repo_dir.resolve().parent / config.storage.root)
