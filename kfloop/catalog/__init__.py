"""The catalog: every dataset, feature view, feature service and model of the project, with owner, description,
schema, freshness and quality score (``kfloop catalog``; see :mod:`kfloop.catalog.collect`)."""

from kfloop.catalog.collect import collect
from kfloop.catalog.publish import Catalog, catalog_json, make_catalog
from kfloop.catalog.render import render_html

__all__ = ["Catalog", "catalog_json", "collect", "make_catalog", "render_html"]
