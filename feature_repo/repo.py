"""Feast object definitions for the ``feast`` CLI (``feast apply`` / ``feast ui`` in a Feast repo folder).

In this source tree, ``cd feature_repo && feast apply``. With an installed kfloop, any folder with a
rendered ``feature_store.yaml`` (``kfloop features repo --out DIR/feature_store.yaml``) and a Python file
holding ``from kfloop.feature_repo.repo import *`` is such a repo. The config and workspace are found as
``kfloop.feature_repo.feast_cli`` says (``$KFLOOP_CONFIG``, or ``kfloop.yaml`` beside the repo). kfloop's
own code never imports this module; it uses ``kfloop.feature_repo.store.objects_for`` with an explicit
config instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from kfloop.feature_repo.feast_cli import repo_workspace
from kfloop.feature_repo.store import objects_for
from kfloop.layout import FEAST_DIR

# Forced by Feast, which collects a repo's objects from module globals at import (after changing into the
# repo folder): the objects are built here, and Feast's folder is created here because its file registry
# and SQLite store create only the last folder of their paths.
_config, _storage = repo_workspace(Path.cwd(), os.environ)
(_storage.root / FEAST_DIR).mkdir(parents=True, exist_ok=True)
_objects = {obj.name: obj for obj in objects_for(_config, _storage).all}
globals().update(_objects)
__all__ = sorted(_objects)  # noqa: PLE0605  (names known only once the config is read)
