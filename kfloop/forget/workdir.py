"""Erasure in the copies local runs leave beside the workspace's own stores.

A local workspace is also the local runs' work directory (:func:`kfloop.layout.local_workdir`), and two commands
leave copies of data rows there that no stage reads again:

- ``kfloop run`` executes the pipeline with kfp.local, which keeps every step's output artifacts under
  ``pipeline_root/<pipeline run>/<task>/<output>``: byte copies of the ingest and contract quarantine files and
  of the data-quality report (JSON, HTML, Markdown). They have no extension, so Parquet is told by its magic
  bytes; a report by its name. Parquet copies lose the entity's rows, a report copy its examples (its HTML and
  Markdown siblings are rendered again), as in the workspace's own quarantine and reports.
- ``kfloop validate --input FILE`` checks a file in a scratch workspace ``adhoc/<run>/`` (its own lake, quarantine
  and reports, kept for review): each is erased like the workspace's lake side.
"""

from __future__ import annotations

import json
from pathlib import Path

from kfloop import layout
from kfloop.forget.parquet import erase_rows, scan
from kfloop.forget.reports import scrub_report
from kfloop.forget.stores import Touched
from kfloop.forget.target import Target
from kfloop.storage import LocalStorage, Storage

#: The validate step's report outputs (``validate_component``'s ``report``, ``report_html``, ``report_md``).
REPORT_ARTIFACT = "report"
RENDERED_ARTIFACTS = {"html": "report_html", "md": "report_md"}


def artifact_keys(storage: Storage) -> list[str]:
    """Every kfp.local artifact of the local runs kept in the workspace."""
    return storage.list(layout.PIPELINE_ROOT + "/")


def erase_artifacts(storage: Storage, target: Target, tmp: Path, dry_run: bool) -> Touched:
    """The entity's rows out of kfp.local's Parquet artifacts and its examples out of its report artifacts."""
    out = Touched("artifacts", layout.PIPELINE_ROOT)
    keys = artifact_keys(storage)
    hits = scan(storage, keys, target, tmp, by_suffix=False)
    out.rows_removed = sum(h.matched for h in hits)
    for hit in hits:
        (out.files_deleted if hit.matched == hit.rows else out.files_rewritten).append(hit.key)
        if not dry_run:
            erase_rows(storage, hit, target)
    present = set(keys)
    for key in keys:
        folder, _, name = key.rpartition("/")
        if name != REPORT_ARTIFACT:
            continue
        try:
            body = json.loads(storage.read_text(key))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(body, dict) or not isinstance(body.get("checks"), list):
            continue
        rendered = {ext: f"{folder}/{n}" for ext, n in RENDERED_ARTIFACTS.items() if f"{folder}/{n}" in present}
        removed = scrub_report(storage, key, body, rendered, target, dry_run)
        if removed:
            out.rows_removed += removed
            out.files_rewritten += [key, *rendered.values()]
    return out


def scratch_workspaces(storage: Storage) -> list[tuple[str, Storage]]:
    """(prefix, storage) of every ``kfloop validate --input`` scratch workspace inside a local workspace."""
    root = storage.local_path(layout.ADHOC)
    if root is None or not root.is_dir():
        return []
    return [(layout.adhoc_prefix(p.name), LocalStorage(p)) for p in sorted(root.iterdir()) if p.is_dir()]


def under(prefix: str, touched: Touched) -> Touched:
    """A scratch workspace's report, its names and keys prefixed with where it is in the workspace."""
    touched.name = f"{prefix}/{touched.name}"
    touched.files_rewritten = [f"{prefix}/{k}" for k in touched.files_rewritten]
    touched.files_deleted = [f"{prefix}/{k}" for k in touched.files_deleted]
    return touched
