"""``config.change``: at the start of a pipeline run, record the config if it differs from the last one recorded.

Why here and not in ``kfloop config``: the config is a file (or a pipeline parameter) nobody has to pass through
kfloop to edit, so the only point where a change is certain to be seen is when a run uses it. Each config a record
saw is kept at ``audit/config/<hash>.json`` so the next change can name the paths that differ; the hash is over the
config's JSON as the steps receive it (:func:`kfloop.config.config_to_json`: field and column order kept).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kfloop import layout
from kfloop.audit.events import before
from kfloop.config import Config, config_to_json
from kfloop.storage.base import Storage
from kfloop.storage.lease import lease

ACTION = "config.change"
#: At most this many changed paths in a record (the two configs are kept in full beside the trail).
MAX_PATHS = 100


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths whose values differ (a mapping is walked key by key; anything else compares whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"-{sub}")
            elif key not in old:
                out.append(f"+{sub}")
            else:
                out += changed_paths(old[key], new[key], sub)
        return out
    return [] if old == new else [path or "(whole config)"]


def _last(storage: Storage) -> tuple[str | None, dict | None]:
    """The hash of the config the newest ``config.change`` record saw, and that config (None, None: never)."""
    try:
        last_hash = json.loads(storage.read_text(layout.audit_config_last_key()))["hash"]
    except FileNotFoundError:
        return None, None
    try:
        return last_hash, json.loads(storage.read_text(layout.audit_config_key(last_hash)))
    except FileNotFoundError:
        return last_hash, None


def record_config_change(storage: Storage, config: Config, *, run: str = "") -> dict | None:
    """Append ``config.change`` (old and new hash, the paths that changed) when ``config`` is not the config the
    last such record saw; returns the record, or None when nothing changed. Runs before anything of the run is
    written, so a failed append fails the run (see :mod:`kfloop.audit.events`)."""
    text = config_to_json(config)
    new_hash = config_hash(text)
    with lease(storage, layout.audit_config_lock_key(), name="config change record", owner=run, timeout_s=60.0):
        old_hash, old = _last(storage)
        if old_hash == new_hash:
            return None
        doc = json.loads(text)
        storage.create_exclusive(layout.audit_config_key(new_hash), text.encode())  # content-addressed: kept if there
        if old is None:
            paths = [f"+{k}" for k in doc] if old_hash is None else ["(previous config not kept)"]
        else:
            paths = changed_paths(old, doc) or ["(order of keys or columns)"]
        details = {
            "old_hash": old_hash,
            "new_hash": new_hash,
            "changed": paths[:MAX_PATHS],
            "changed_count": len(paths),
            "config": layout.audit_config_key(new_hash),
            "run": run or None,
        }
        record = before(storage, ACTION, {"project": config.project}, details)
        storage.write_text(layout.audit_config_last_key(), json.dumps({"hash": new_hash, "seq": record["seq"]}))
        return record
