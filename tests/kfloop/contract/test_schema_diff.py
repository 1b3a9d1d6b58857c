"""Schema change detection: added, dropped, renamed-looking and retyped columns, each named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfloop.components.ingest import ingest
from kfloop.components.validate import validate
from kfloop.config import parse_config
from kfloop.config.contract import SchemaPolicy
from kfloop.contract.schema_diff import diff_schema, drift_from_accepted
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.errors import SchemaChangeError
from kfloop.storage import LocalStorage
from tests.conftest import demo_config

DECLARED = {"id": "string", "amount": "float64", "ts": "timestamp", "n": "int64"}


def kinds(changes: list) -> set[tuple[str, str, bool]]:
    return {(c.change, c.column, c.breaking) for c in changes}


def test_no_change_for_untyped_or_compatible_columns() -> None:
    assert diff_schema(dict.fromkeys(DECLARED), DECLARED, SchemaPolicy()) == []
    typed = {"id": "string", "amount": "int64", "ts": "timestamp", "n": "int64"}
    assert diff_schema(typed, DECLARED, SchemaPolicy()) == []


def test_added_dropped_retyped_and_renamed_are_named() -> None:
    observed = {"id": "string", "amt": "float64", "ts": "timestamp", "n": "string", "extra": "bool"}
    found = kinds(diff_schema(observed, DECLARED, SchemaPolicy()))
    assert found == {("renamed", "amount", True), ("new", "extra", False), ("retyped", "n", True)}
    dropped = kinds(diff_schema({"id": None, "ts": None, "n": None}, DECLARED, SchemaPolicy()))
    assert dropped == {("missing", "amount", True)}


def test_policy_decides_what_breaks() -> None:
    strict = SchemaPolicy(new_column="error")
    assert kinds(diff_schema({**dict.fromkeys(DECLARED), "x": None}, DECLARED, strict)) == {("new", "x", True)}
    lenient = SchemaPolicy(missing_column="warn", retyped_column="warn")
    assert all(not c.breaking for c in diff_schema({"id": "bool"}, DECLARED, lenient))


def test_drift_against_last_accepted_file() -> None:
    found = kinds(drift_from_accepted({"a": "int64", "c": None}, {"a": "float64", "b": None}))
    assert found == {("new", "c", False), ("missing", "b", False), ("retyped", "a", False)}


def _frame(rows: int = 300):
    return generate(DemoSpec(rows=rows, seed=2)).frame


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop", r"missing column channel: declared string, not in the file \[breaking\]"),
        ("retype", r"retyped column hour_of_day: declared int64, the file has string \[breaking\]"),
        ("rename", r"renamed column amount: 'amount' is missing and 'amount_usd' is new"),
    ],
)
def test_breaking_change_stops_ingestion_with_names(tmp_path: Path, change: str, expected: str) -> None:
    frame = _frame()
    if change == "drop":
        frame = frame.drop(columns=["channel"])
    elif change == "retype":
        frame["hour_of_day"] = frame["hour_of_day"].astype(str)
    else:
        frame = frame.rename(columns={"amount": "amount_usd"})
    src = tmp_path / "src.parquet"
    write_frame(frame, src, "parquet")
    storage = LocalStorage(tmp_path / "ws")
    with pytest.raises(SchemaChangeError, match=expected):
        ingest(demo_config(tmp_path / "ws", uri=str(src)), storage)
    assert storage.list("lake/") == []


def test_added_column_warns_by_default_and_fails_when_configured(tmp_path: Path) -> None:
    frame = _frame(1500)  # above the demo contract's min_rows
    frame["loyalty_tier"] = "gold"
    src = tmp_path / "src.csv"
    write_frame(frame, src, "csv")
    storage = LocalStorage(tmp_path / "ws")
    cfg = demo_config(tmp_path / "ws", uri=str(src))
    result = ingest(cfg, storage)
    assert result.rows_written == len(frame)
    run = json.loads(storage.read_text(f"lake/transactions/_runs/{result.run_id}.json"))
    assert run["schema_changes"][0]["column"] == "loyalty_tier"
    report = validate(cfg, storage).report
    schema_check = next(c for c in report.checks if c.check == "table.schema")
    assert not schema_check.passed and "new column loyalty_tier" in schema_check.message
    assert report.gate_passed  # a warning, not a gate failure
    data = cfg.model_dump(mode="json")
    data["contract"]["schema_changes"]["new_column"] = "error"
    with pytest.raises(SchemaChangeError, match="new column loyalty_tier"):
        ingest(parse_config(data, "test"), LocalStorage(tmp_path / "ws2"))
