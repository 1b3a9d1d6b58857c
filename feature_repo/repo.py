"""Feast object definitions for the ``feast`` CLI (``cd feature_repo && feast apply`` / ``feast ui``).

Feast collects objects from module globals, so this one module builds them at import from the kfloop
config (``$KFLOOP_CONFIG``, default: the demo config beside this repository). kfloop's own code never
imports it; it uses ``kfloop.feature_repo.store.objects_for`` with an explicit config instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from kfloop.config import load_config
from kfloop.feature_repo.store import objects_for
from kfloop.storage import LocalStorage

_ROOT = Path(__file__).resolve().parents[1]
_CONFIG = load_config(os.environ.get("KFLOOP_CONFIG", str(_ROOT / "examples" / "fraud" / "kfloop.yaml")))
_STORAGE = LocalStorage(_ROOT / _CONFIG.storage.root) if _CONFIG.storage.type == "local" else None
if _STORAGE is None:
    raise RuntimeError("feature_repo/repo.py serves the embedded (local) workspace; on a cluster kfloop applies")
(_ROOT / _CONFIG.storage.root / "feast").mkdir(parents=True, exist_ok=True)  # Feast's registry goes here
globals().update({obj.name: obj for obj in objects_for(_CONFIG, _STORAGE).all})
