"""One filled workspace for every report test (filled once per test process: it takes about two seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kfloop.config import Config
from kfloop.report.publish import ReportResult, make_report
from kfloop.storage import LocalStorage
from tests.report.workspace import filled_workspace


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
    ws = filled_workspace(tmp_path_factory.mktemp("report"))
    report = make_report(ws.config, ws.storage, send=False, pdf=False)
    return Filled(ws.root, ws.config, ws.config_path, ws.storage, report)
