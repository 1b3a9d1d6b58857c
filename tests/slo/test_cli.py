"""``kfloop slo status`` prints the table, the JSON and its exit codes; ``kfloop run`` leaves its run record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.errors import PipelineError
from kfloop.slo.runs import end_run, read_runs, start_run
from kfloop.storage import LocalStorage
from tests.conftest import DEMO_CONFIG

MODEL = "fraud-detector"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(f"extends: {DEMO_CONFIG}\nstorage: {{type: local, root: {tmp_path / 'ws'}}}\nslo: {{window: 7d}}\n")
    return cfg


def test_status_table_json_and_the_exhausted_exit(config_file: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    end_run(storage, start_run(storage, MODEL, "r1"))  # the CLI's clock is now: runs of a minute ago count
    end_run(storage, start_run(storage, MODEL, "r2"), error=RuntimeError("step 'train' failed: out of memory"))

    runner = CliRunner()
    table = runner.invoke(app, ["slo", "status", "-c", str(config_file)], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output  # a spent budget is reported, not an error, by default
    row = next(line for line in table.output.splitlines() if "pipeline_success" in line)
    assert "99.50%" in row and "50.000%" in row and "1 / 2" in row and "-9900.0%" in row and "workspace" in row
    assert "2 run(s) ended, 1 failed (newest: r2: step 'train' failed: out of memory)" in table.output
    assert "serving_latency: no request of model 'fraud-detector' recorded" in table.output

    doc = json.loads(runner.invoke(app, ["slo", "status", "-c", str(config_file), "--json"]).output)
    assert [d["name"] for d in doc] == [
        "feature_freshness",
        "pipeline_success",
        "serving_availability",
        "serving_latency",
    ]
    runs = doc[1]
    assert (runs["sli"], runs["good"], runs["total"], runs["window"], runs["objective"]) == (0.5, 1, 2, "7d", 0.995)
    assert doc[3]["sli"] is None and doc[3]["budget_remaining"] is None

    failing = runner.invoke(app, ["slo", "status", "-c", str(config_file), "--fail-on-exhausted"])
    assert failing.exit_code == 3, failing.output


def test_no_data_is_not_exhausted(config_file: Path) -> None:
    result = CliRunner().invoke(app, ["slo", "status", "-c", str(config_file), "--fail-on-exhausted"])
    assert result.exit_code == 0, result.output


def test_kfloop_run_records_a_failed_run(config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook around the pipeline, not the pipeline: run_local is replaced by one that fails as a contract gate
    does (a real failing kfp.local run takes ~17 s, beyond this suite's budget; it records the same)."""
    from kfloop.pipelines import local

    def contract_gate(*args: object, **kwargs: object) -> None:
        raise PipelineError("data contract gate failed; training did not run:\n  min_rows: 12 of 1,000")

    monkeypatch.setattr(local, "run_local", contract_gate)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "-c", str(config_file)])
    assert result.exit_code != 0
    [run] = read_runs(LocalStorage(tmp_path / "ws"), MODEL)
    assert (run.outcome, run.gate) == ("failed", "contract")
    assert run.reason == "data contract gate failed; training did not run:"
    assert run.ended is not None and run.ended >= run.started
