"""CLI: --help everywhere, one-line errors with non-zero exits, the demo flow through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from tests.conftest import DEMO_CONFIG, REPO

runner = CliRunner()
COMMANDS = [
    [],
    ["config"],
    ["config", "validate"],
    ["config", "schema"],
    ["demo-data"],
    ["ingest"],
    ["run"],
    ["compile"],
]


def kfloop(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kfloop", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "kfloop")
def test_every_command_has_help(cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_config_validate_and_schema() -> None:
    ok = runner.invoke(app, ["config", "validate", "--config", str(DEMO_CONFIG)])
    assert ok.exit_code == 0 and "ok" in ok.output
    schema = runner.invoke(app, ["config", "schema"])
    assert json.loads(schema.output)["title"] == "Config"


def test_invalid_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "kfloop.yaml"
    bad.write_text(DEMO_CONFIG.read_text().replace("batch_rows: 100000", "batch_rows: lots"))
    result = kfloop("config", "validate", "--config", str(bad))
    assert result.returncode == 2
    assert "source.batch_rows" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_default_config_points_to_the_demo(tmp_path: Path) -> None:
    result = kfloop("ingest", cwd=tmp_path)
    assert result.returncode == 2
    assert "examples/fraud/kfloop.yaml" in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = kfloop("--debug", "config", "validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_an_error_is_one_line_and_debug_adds_its_chained_cause(tmp_path: Path) -> None:
    """The cause stays chained (``raise … from err``): ``--debug`` shows it; without, one line. The exit code
    is the error's (kfloop.errors' mapping: ConfigError → 2) either way."""
    plain = kfloop("config", "validate", "--config", str(tmp_path))  # a directory: reading it fails
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [f"error: {tmp_path}: cannot read config: Is a directory"]
    debug = kfloop("--debug", "config", "validate", "--config", str(tmp_path))
    assert debug.returncode == 2
    assert "IsADirectoryError" in debug.stderr and "The above exception was the direct cause" in debug.stderr
    assert f"ConfigError: {tmp_path}: cannot read config: Is a directory" in debug.stderr


def test_demo_data_then_ingest_via_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(
        DEMO_CONFIG.read_text()
        .replace(".kfloop/source/transactions.csv", "src.jsonl")
        .replace("root: .kfloop", "root: ws")
    )
    made = kfloop("demo-data", "--rows", "2000", "--out", "src.jsonl", "--defects", "wrong_types=0.01", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "wrote 2,000 rows" in made.stdout and "wrong_types=20" in made.stdout
    done = kfloop("ingest", "--config", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rows quarantined" in done.stdout and "20" in done.stdout
    assert (tmp_path / "ws" / "lake" / "transactions" / "_manifest.json").is_file()
    skipped = kfloop("demo-data", "--rows", "10", "--out", "src.jsonl", "--skip-existing", cwd=tmp_path)
    assert "skipped" in skipped.stdout


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    result = kfloop("demo-data", "--rows", "10", "--out", str(tmp_path / "x.csv"), "--defects", "bogus=1")
    assert result.returncode == 2
    assert "bogus" in result.stderr
