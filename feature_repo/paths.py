"""Where the feature stage keeps its files in the workspace (one place, so every stage agrees)."""

from __future__ import annotations

from kfloop.config import Config

FEAST_DIR = "feast"


def offline_key(view: str) -> str:
    """The Feast offline source of a view: one Parquet file, replaced atomically on each update."""
    return f"features/{view}.parquet"


def state_key(view: str) -> str:
    """Per-view progress: newest event computed, newest materialized, row counts."""
    return f"features/{view}.state.json"


def stale_key(view: str) -> str:
    """Entities whose online values the feature stage invalidated (rows recomputed or gone), until the
    next materialization rewrites or deletes them: one Parquet column of entity keys."""
    return f"features/{view}.stale.parquet"


def lease_key(view: str) -> str:
    """The lease one feature or materialize run holds while it changes the view's table, state and online rows."""
    return f"features/{view}.lease"


def training_set_prefix(config: Config) -> str:
    return f"training_sets/{config.features.service}"


def feast_project(config: Config) -> str:
    """Feast project names are identifiers: the kfloop project with dashes as underscores."""
    return config.features.feast_project or config.project.replace("-", "_")
