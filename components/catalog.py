"""Catalog stage: the project's catalog as the catalog pipeline's step makes it (see :mod:`kfloop.catalog`). The
step stores it in the workspace like ``kfloop catalog`` does and hands the page and its data to the KFP wrapper,
which publishes the page as an HTML artifact of the run (the Kubeflow UI shows it)."""

from __future__ import annotations

from pathlib import Path

from kfloop.catalog import Catalog, catalog_json, make_catalog


def run_catalog_step(config_json: str, html_path: str, json_path: str) -> Catalog:
    """Entrypoint inside the pipeline step: the catalog, stored, and written to the step's artifact paths."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    result = make_catalog(config, storage)
    Path(html_path).write_text(result.html, encoding="utf-8")
    Path(json_path).write_text(catalog_json(result.record), encoding="utf-8")
    return result
