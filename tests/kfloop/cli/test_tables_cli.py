"""CLI: `kfloop ingest|validate --table NAME` run an attribute table of features.tables under its own contract
(own lake dataset, quarantine and quality report); an unknown name is a one-line error naming the known ones."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import parse_config
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.errors import ConfigError
from kfloop.step import for_table
from tests.conftest import demo_config

runner = CliRunner()

MERCHANTS = """merchant_id,region,capacity
m-1,north,10
m-2,south,20
m-3,west,-5
m-4,east,abc
"""


def table_config(**contract: object) -> dict:
    """The demo config (workspace ws/, source src.csv) with one snapshot table, merchants.csv."""
    data = demo_config(Path("ws"), uri="src.csv").model_dump(mode="json")
    data["features"]["tables"] = [
        {
            "name": "merchants",
            "key": "merchant_id",
            "source": {
                "uri": "merchants.csv",
                "columns": {"merchant_id": "string", "region": "string", "capacity": "int64"},
            },
            "contract": {"columns": {"capacity": {"min": 0, "severity": "quarantine"}}, **contract},
        }
    ]
    return data


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "merchants.csv").write_text(MERCHANTS)
    (tmp_path / "kfloop.yaml").write_text(yaml.safe_dump(table_config(), sort_keys=False))
    return tmp_path


def test_ingest_and_validate_a_table(workdir: Path) -> None:
    ingested = runner.invoke(app, ["ingest", "--table", "merchants"])
    assert ingested.exit_code == 0, ingested.output
    assert "lake/merchants" in ingested.output
    assert (workdir / "ws" / "lake" / "merchants" / "_manifest.json").is_file()
    assert not (workdir / "ws" / "lake" / "transactions").exists()  # the main source is left alone
    # 'abc' is no int64: quarantined at ingest, in the table's own quarantine
    (rejected,) = (workdir / "ws" / "quarantine" / "merchants").glob("*.parquet")
    assert pq.read_table(rejected).column("merchant_id").to_pylist() == ["m-4"]

    validated = runner.invoke(app, ["validate", "--table", "merchants"])
    assert validated.exit_code == 0, validated.output
    assert "data contract on merchants" in validated.output and "capacity.min" in validated.output
    # the row breaking the table's contract (capacity >= 0) lands in the table's contract quarantine
    (broken,) = (workdir / "ws" / "quarantine" / "merchants_contract").glob("*.parquet")
    assert pq.read_table(broken).column("merchant_id").to_pylist() == ["m-3"]
    assert (workdir / "ws" / "reports" / "merchants" / "quality" / "latest.json").is_file()
    clean = workdir / "ws" / "lake" / "merchants_clean" / "_manifest.json"
    assert clean.is_file() and '"rows": 2' in clean.read_text()


def test_a_failing_table_gate_names_the_table(workdir: Path) -> None:
    data = table_config(min_rows={"value": 100, "severity": "error"})
    (workdir / "kfloop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert runner.invoke(app, ["ingest", "--table", "merchants"]).exit_code == 0
    result = runner.invoke(app, ["validate", "--table", "merchants"])
    assert result.exit_code == 1
    assert "data contract gate failed on table merchants" in result.output
    assert "table.min_rows" in result.output


def test_validate_a_table_file_in_a_scratch_workspace(workdir: Path) -> None:
    result = runner.invoke(app, ["validate", "--table", "merchants", "--input", "merchants.csv"])
    assert result.exit_code == 0, result.output
    assert "data contract on merchants" in result.output
    assert not (workdir / "ws" / "lake" / "merchants").exists()  # the workspace's lake is not touched


def test_validate_the_main_source_file_in_a_scratch_workspace_names_the_tables_left_out(workdir: Path) -> None:
    """`validate --input` without --table checks the main source's file (it once crashed after the report)."""
    frame = generate(DemoSpec(rows=1_500, seed=3))
    write_frame(frame.frame, str(workdir / "src.csv"), "csv")
    result = runner.invoke(app, ["validate", "--input", "src.csv"])
    assert result.exit_code == 0, result.output
    assert "data contract on transactions" in result.output
    assert "attribute tables not validated: merchants" in result.output
    assert not (workdir / "ws" / "lake" / "transactions").exists()


@pytest.mark.parametrize("command", ["ingest", "validate"])
def test_unknown_table_is_a_config_error_naming_the_known_ones(workdir: Path, command: str) -> None:
    result = runner.invoke(app, [command, "--table", "stations"])
    assert result.exit_code == 2
    assert "no attribute table 'stations' in features.tables (known tables: merchants)" in result.output
    assert "Traceback" not in result.output


def test_for_table_without_tables_says_so() -> None:
    cfg = demo_config()
    assert for_table(cfg, "") is cfg
    with pytest.raises(ConfigError, match=r"no attribute table 'x' in features.tables \(the config declares no"):
        for_table(cfg, "x")
    scoped = for_table(parse_config(table_config(), "t"), "merchants")
    assert scoped.source.dataset == "merchants" and scoped.source.entity_keys == ("merchant_id",)


def test_ingest_without_table_ingests_the_main_source_and_names_the_tables_left(workdir: Path) -> None:
    write_frame(generate(DemoSpec(rows=50, seed=3)).frame, workdir / "src.csv", "csv")
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    assert "lake/transactions" in result.output
    assert "attribute tables not ingested: merchants" in result.output and "--table NAME" in result.output
    assert not (workdir / "ws" / "lake" / "merchants").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [("merchants", "expected NAME=URI"), ("stations=x.csv", "no attribute table 'stations'")],
)
def test_run_table_source_is_checked_before_the_pipeline_starts(workdir: Path, value: str, message: str) -> None:
    result = runner.invoke(app, ["run", "--table-source", value])
    assert result.exit_code == 2
    assert message in result.output
    assert not (workdir / "ws" / "lake").exists()


def test_the_run_summary_counts_a_tables_too_late_and_unreadable_rows() -> None:
    """Too-late rows of a table are never silent: its summary line counts them and says where they are."""
    from rich.console import Console

    from kfloop.cli.summary import tables_table

    ingest = {
        "already_ingested": False,
        "rows_written": 1,
        "rows_read": 98,
        "rows_quarantined": 3,
        "rows_too_late": 2,
        "too_late_uri": "ws/quarantine/stores_too_late/r1.parquet",
        "dataset_rows": 96,
        "dataset": "stores",
    }
    console = Console(width=200, record=True)
    console.print(tables_table({"stores": {"ingest": ingest, "quality": {}}}))
    text = console.export_text()
    assert "2 rows too late (not ingested) → ws/quarantine/stores_too_late/r1.parquet" in text
    assert "3 unreadable rows quarantined" in text


def test_validating_a_table_whose_every_row_was_unreadable_says_so(workdir: Path) -> None:
    (workdir / "merchants.csv").write_text("merchant_id,region,capacity\nm-1,north,x\nm-2,south,y\n")
    assert runner.invoke(app, ["ingest", "--table", "merchants"]).exit_code == 0
    result = runner.invoke(app, ["validate", "--table", "merchants"])
    assert result.exit_code != 0
    assert "lake dataset 'merchants' has no rows: 1 ingest run(s) read 2 rows, 2 unreadable" in result.output
    assert "run ingestion first" not in result.output
