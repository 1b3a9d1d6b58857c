"""Sections without keys. They are typed and closed, so a key put there fails at load instead of being ignored."""

from __future__ import annotations

from kfloop.config._base import Section


class MonitoringConfig(Section):
    """Accepts no keys: leave it out or write ``monitoring: {}``; any key here fails at load."""
