"""One filled workspace for every report test (filled once per test process: it takes about two seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kfloop.config import Config, config_to_json
from kfloop.report.publish import ReportResult, make_report
from kfloop.storage import LocalStorage
from tests.report.workspace import fill


@dataclass(frozen=True)
class Filled:
    """The filled workspace, its config (also as a file, for the CLI) and the report made of it (no PDF, not sent)."""

    root: Path
    config: Config
    config_path: Path
    storage: LocalStorage
    report: ReportResult


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    root = tmp_path_factory.mktemp("report")
    config, storage = fill(root)
    path = root / "kfloop.json"  # JSON is YAML: `kfloop report -c` reads it
    path.write_text(config_to_json(config))
    return Filled(root, config, path, storage, make_report(config, storage, send=False, pdf=False))
