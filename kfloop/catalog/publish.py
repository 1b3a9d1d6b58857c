"""One catalog, end to end: collect → render → store (``reports/catalog.{html,json}``, the page first and the data
last, each written atomically). What ``kfloop catalog`` and the catalog pipeline step run.

The catalog is a picture of now, not an event: each run replaces the previous one (the audit trail and the lake
manifests keep the history)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from kfloop import layout
from kfloop.catalog.collect import collect
from kfloop.catalog.render import render_html
from kfloop.config import Config
from kfloop.storage import Storage

__all__ = ["Catalog", "catalog_json", "make_catalog"]


@dataclass(frozen=True)
class Catalog:
    record: dict
    html: str
    uris: dict[str, str]  # json / html → where it is stored


def catalog_json(record: dict) -> str:
    return json.dumps(record, indent=2, default=str)


def make_catalog(config: Config, storage: Storage, *, now: datetime | None = None, store: bool = True) -> Catalog:
    """The catalog of ``config``'s project, stored in the workspace unless ``store`` is false."""
    record = collect(config, storage, now)
    html = render_html(record)
    keys = {"html": layout.catalog_key("html"), "json": layout.catalog_key("json")}
    if store:
        storage.write_text(keys["html"], html)
        storage.write_text(keys["json"], catalog_json(record))
    return Catalog(record, html, {ext: storage.uri(key) for ext, key in keys.items()} if store else {})
