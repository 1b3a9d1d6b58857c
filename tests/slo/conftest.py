"""Shared pieces of the SLO tests: a config per workspace and the fixed clock every window ends at."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kfloop.config import Config, parse_config
from tests.conftest import demo_config

#: Every test's "now": windows end here (a whole minute, so the window is exactly slo.window).
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def slo_config(workspace: Path, *, model: str = "fraud-detector", project: str = "fraud-demo", **slo: object) -> Config:
    """The demo config in ``workspace`` with the model, project and ``slo`` keys given."""
    data = demo_config(workspace).model_dump(mode="json")
    data["training"]["model_name"], data["project"] = model, project
    data["slo"] = {**data["slo"], **slo}
    return parse_config(data, "<slo test>")
