"""Erasure in data-quality reports: a failed check keeps up to a few offending rows as examples, and those rows
may be the erased entity's. Its examples are dropped from the report's JSON (each run's and ``latest.json``) and
the run's HTML and Markdown are rendered again from it; reports without the entity are not rewritten."""

from __future__ import annotations

import json

from kfloop import layout
from kfloop.forget.stores import Touched
from kfloop.forget.target import Target, canonical_text
from kfloop.storage import Storage


def _is_entity(example: object, column: str | None, target: Target) -> bool:
    if isinstance(example, dict):
        value = example.get(target.key)
        return value is not None and canonical_text(value) == target.text
    return column == target.key and example is not None and canonical_text(example) == target.text


def _without(body: dict, target: Target) -> int:
    removed = 0
    for check in body.get("checks", []):
        examples = check.get("examples") or []
        kept = [e for e in examples if not _is_entity(e, check.get("column"), target)]
        removed += len(examples) - len(kept)
        check["examples"] = kept
    return removed


def scrub_report(
    storage: Storage, key: str, body: dict, rendered: dict[str, str], target: Target, dry_run: bool
) -> int:
    """Drop the entity's examples from the report ``body`` read from ``key`` and write it back, with its HTML and
    Markdown renderings (``rendered``: ``html``/``md`` → key) rendered again; returns the examples removed (0:
    nothing written)."""
    from kfloop.contract.render import render_html, render_markdown
    from kfloop.contract.report import report_from_json

    removed = _without(body, target)
    if not removed or dry_run:
        return removed
    text = json.dumps(body, indent=2, default=str)
    report = report_from_json(text)
    for ext, k in rendered.items():
        storage.write_text(k, render_html(report) if ext == "html" else render_markdown(report))
    storage.write_text(key, text)
    return removed


def erase_reports(storage: Storage, dataset: str, target: Target, dry_run: bool) -> Touched:
    """The entity's examples out of every quality report of ``dataset``."""
    out = Touched("reports", layout.report_prefix(dataset))
    latest = layout.latest_key(layout.report_prefix(dataset))
    for key in storage.list(layout.report_prefix(dataset) + "/"):
        if not key.endswith(".json"):
            continue
        run = key.rsplit("/", 1)[-1].removesuffix(".json")
        rendered = {} if key == latest else {ext: layout.report_key(dataset, run, ext) for ext in ("html", "md")}
        rendered = {ext: k for ext, k in rendered.items() if storage.exists(k)}
        removed = scrub_report(storage, key, json.loads(storage.read_text(key)), rendered, target, dry_run)
        if removed:
            out.rows_removed += removed
            out.files_rewritten += [key, *rendered.values()]
    return out
