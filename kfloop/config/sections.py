"""Sections that later stages fill in. They are typed and closed now, so a typo fails at load."""

from __future__ import annotations

from kfloop.config._base import Section


class MonitoringConfig(Section):
    """Evidently drift monitoring settings."""
