"""Search every store for traces of one entity: how an erasure is verified (the tests and the benchmark).

Parquet objects are searched by column (the entity's column, and the raw text of unparsable records), not only
the ones a manifest lists; kfp.local's artifacts (no extension) are told Parquet or text by their content. Every
other object (reports, manifests, cards, audit records) is searched by its text, for the value as a whole token
(string keys only: a number would match counts). The online store and the stream state are asked for the
entity's keys as :mod:`kfloop.forget.online` builds them.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kfloop import layout
from kfloop.column_types import ColumnType
from kfloop.config import Config
from kfloop.forget.online import erase_online, erase_stream_state
from kfloop.forget.parquet import is_parquet, scan
from kfloop.forget.target import Target
from kfloop.forget.workdir import artifact_keys
from kfloop.storage import Storage

#: Where the workspace keeps data rows (the inference log's prefix comes from the config); ``adhoc``: the
#: scratch workspaces of ``kfloop validate --input``.
DATA_ROOTS = (layout.LAKE, layout.QUARANTINE, layout.FEATURES, layout.TRAINING_SETS, layout.ADHOC)
#: Objects searched as text.
TEXT_SUFFIXES = (".json", ".html", ".md", ".prom", ".csv", ".jsonl")


def traces(config: Config, storage: Storage, target: Target, environ: Mapping[str, str]) -> dict[str, int]:
    """Rows, keys or text mentions of the entity found, per store (all zero after a complete erasure)."""
    from kfloop.serving.log_table import log_prefix

    found: dict[str, int] = {}
    roots = {**{r: r for r in DATA_ROOTS}, "inference_log": log_prefix(config)}
    with tempfile.TemporaryDirectory(prefix="kfloop-traces-") as tmp:
        for name, root in roots.items():
            found[name] = sum(h.matched for h in scan(storage, storage.list(root + "/"), target, Path(tmp)))
        artifacts = artifact_keys(storage)  # kfp.local's copies have no extension: Parquet by content
        found["artifacts"] = sum(h.matched for h in scan(storage, artifacts, target, Path(tmp), by_suffix=False))
    found["online"] = erase_online(config, storage, target, environ, dry_run=True).keys_deleted
    found["stream_state"] = erase_stream_state(config, target, environ, dry_run=True).keys_deleted
    found["text"] = 0
    if target.column_type is ColumnType.STRING:
        token = re.compile(rb"(?<![\w-])" + re.escape(target.text.encode()) + rb"(?![\w-])")
        texts = [k for k in storage.list("") if k.endswith(TEXT_SUFFIXES) and not k.startswith(layout.LOCAL_WORKDIR)]
        texts += [k for k in artifacts if not k.endswith(TEXT_SUFFIXES) and not is_parquet(storage, k)]
        for key in texts:
            found["text"] += len(token.findall(storage.read_bytes(key)))
    return found
