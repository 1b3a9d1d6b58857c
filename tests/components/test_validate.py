"""Validate stage: the data contract on generated defects, duplicates modes, the gate, freshness, rules, reports."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from kfloop import lake, layout
from kfloop.cli.summary import quality_table
from kfloop.components.ingest import ingest
from kfloop.components.validate import ValidateResult, validate
from kfloop.config import Config, load_config, parse_config
from kfloop.contract.checks import row_checks
from kfloop.demo import CHANNELS, MERCHANT_CATEGORIES, DefectSpec, DemoSpec, generate, write_frame
from kfloop.errors import ConfigError
from kfloop.storage import LocalStorage, Storage
from tests.conftest import DEMO_CONFIG, demo_config

NOW = datetime(2026, 6, 1, tzinfo=UTC)  # after every generated event (2026-01-01 + 90 days), within 3650d
CLEAN = "transactions_clean"
HEADER = (
    "transaction_id,customer_id,merchant_id,event_timestamp,amount,merchant_category,channel,"
    "distance_from_home_km,hour_of_day,is_fraud\n"
)


def make_config(workspace: Path, uri: Path | str, edit: Callable[[dict], None] | None = None, **source) -> Config:
    """The demo config on ``workspace``/``uri``; ``edit`` changes the contract section (a plain dict)."""
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(workspace)}
    data["source"].update(uri=str(uri), **source)
    if edit is not None:
        edit(data["contract"])
    return parse_config(data, "test")


def read_clean(storage: Storage) -> pd.DataFrame:
    manifest = lake.read_manifest(storage, CLEAN)
    assert manifest is not None
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f.key))) for f in manifest.files]
    return pa.concat_tables(tables).to_pandas()


def read_quarantine(result: ValidateResult) -> pd.DataFrame:
    assert result.quarantine_uri is not None
    return pq.read_table(result.quarantine_uri).to_pandas()


def by_id(result: ValidateResult) -> dict:
    return {c.check: c for c in result.report.checks}


def assert_accounting(result: ValidateResult) -> None:
    r = result.report
    assert r.rows_in == r.rows_clean + r.rows_quarantined + r.rows_dropped_duplicates


@dataclass
class Lake:
    workspace: Path
    src: Path
    frame: pd.DataFrame
    injected: dict[str, list[str]]
    storage: LocalStorage

    def config(self, edit: Callable[[dict], None] | None = None, **source) -> Config:
        return make_config(self.workspace, self.src, edit, **source)


def make_lake(tmp: Path, rows: int = 2000, seed: int = 5, fmt: str = "parquet", **defects: float) -> Lake:
    data = generate(DemoSpec(rows=rows, seed=seed, defects=DefectSpec(**defects)))
    src = tmp / f"src.{fmt}"
    write_frame(data.frame, src, fmt)
    lk = Lake(tmp / "ws", src, data.frame, data.injected, LocalStorage(tmp / "ws"))
    ingest(lk.config(), lk.storage)
    return lk


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def min_rows_one(contract: dict) -> None:
    contract["min_rows"]["value"] = 1


# --- clean data -----------------------------------------------------------------------------------------------


def test_clean_generated_data_passes_with_score_100(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=2000)
    result = validate(lk.config(), lk.storage, now=NOW)
    r = result.report
    assert r.quality_score == 100.0 and r.gate_passed
    assert all(c.passed for c in r.checks), [c.check for c in r.checks if not c.passed]
    assert r.rows_in == r.rows_clean == len(lk.frame)
    assert (r.rows_quarantined, r.rows_dropped_duplicates) == (0, 0)
    assert result.quarantine_uri is None
    assert result.clean_manifest_uri is not None and not result.already_validated
    clean = read_clean(lk.storage)
    assert sorted(clean["transaction_id"]) == sorted(lk.frame["transaction_id"])
    # every declared row check plus the table checks ran
    ids = set(by_id(result))
    assert {c.check for c in row_checks(lk.config().contract)} <= ids
    assert {"table.completeness", "table.min_rows", "table.freshness", "table.duplicates"} <= ids


# --- generated defects, caught at the injected rate -------------------------------------------------------------

DEFECTS = {"nulls": 0.02, "duplicates": 0.01, "out_of_range": 0.02, "unknown_categories": 0.02}
DEFECT_ROWS = 5000


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, ValidateResult]:
    lk = make_lake(tmp_path_factory.mktemp("defects"), rows=DEFECT_ROWS, seed=11, **DEFECTS)
    # batch_rows 1000: several batches per partition file, so both passes work batch by batch
    return lk, validate(lk.config(batch_rows=1000), lk.storage, now=NOW)


def injected_rows(lk: Lake, kind: str) -> pd.DataFrame:
    rows = lk.frame[lk.frame["transaction_id"].isin(lk.injected[kind])]
    assert rows["transaction_id"].is_unique  # defects other than duplicates are never duplicated
    return rows


def expected_quarantine_ids(lk: Lake) -> set[str]:
    amount_nulls = injected_rows(lk, "nulls")["amount"].isna()
    return (
        set(lk.injected["out_of_range"])
        | set(lk.injected["unknown_categories"])
        | set(injected_rows(lk, "nulls")["transaction_id"][amount_nulls])
    )


def test_injected_counts_match_the_rates(defective) -> None:
    lk, result = defective
    for kind, rate in DEFECTS.items():
        assert len(lk.injected[kind]) == round(rate * DEFECT_ROWS), kind
    assert result.report.rows_in == DEFECT_ROWS + len(lk.injected["duplicates"])


def test_out_of_range_rows_are_caught_by_min_and_max(defective) -> None:
    lk, result = defective
    checks = by_id(result)
    bad = injected_rows(lk, "out_of_range")
    expected = {
        "amount.min": int((bad["amount"] < 0).sum()),
        "hour_of_day.max": int((bad["hour_of_day"] > 23).sum()),
        "distance_from_home_km.min": int((bad["distance_from_home_km"] < 0).sum()),
    }
    assert all(expected.values()), expected  # the generator spread the defect over all three columns
    assert {k: checks[k].failed for k in expected} == expected
    assert sum(checks[k].failed for k in expected) == len(lk.injected["out_of_range"])
    for k, n in expected.items():
        assert checks[k].rate == pytest.approx(n / result.report.rows_in)
        assert not checks[k].passed and checks[k].severity == "quarantine"
    for k in ("amount.max", "hour_of_day.min"):
        assert checks[k].passed
    quarantined = set(read_quarantine(result)["transaction_id"])
    assert set(lk.injected["out_of_range"]) <= quarantined


def test_unknown_categories_are_caught_by_allowed(defective) -> None:
    lk, result = defective
    checks = by_id(result)
    bad = injected_rows(lk, "unknown_categories")
    want_cat = int((~bad["merchant_category"].isin(MERCHANT_CATEGORIES)).sum())
    want_channel = int((~bad["channel"].isin(CHANNELS)).sum())
    assert want_cat and want_channel
    assert checks["merchant_category.allowed"].failed == want_cat
    assert checks["channel.allowed"].failed == want_channel
    assert want_cat + want_channel == len(lk.injected["unknown_categories"])
    assert set(lk.injected["unknown_categories"]) <= set(read_quarantine(result)["transaction_id"])


def test_nulls_are_caught_where_the_contract_requires_values(defective) -> None:
    lk, result = defective
    checks = by_id(result)
    contract = lk.config().contract
    nulls = injected_rows(lk, "nulls")
    nulled = {c for c in nulls.columns if nulls[c].isna().any()}
    # the generator nulls amount, merchant_category, channel, distance_from_home_km; of those the demo contract
    # only marks amount non-nullable
    assert nulled == {"amount", "merchant_category", "channel", "distance_from_home_km"}
    required = {c for c, rule in contract.columns.items() if not rule.nullable}
    assert nulled & required == {"amount"}
    amount_null_ids = set(nulls["transaction_id"][nulls["amount"].isna()])
    assert amount_null_ids
    assert checks["amount.nullable"].failed == len(amount_null_ids)
    for col in required - {"amount"}:
        assert checks[f"{col}.nullable"].failed == 0
    q = read_quarantine(result).set_index("transaction_id")
    assert amount_null_ids <= set(q.index)
    assert q.loc[sorted(amount_null_ids), "_check:amount.nullable"].notna().all()
    # nulls in nullable columns fail nothing (allowed/min skip nulls) and those rows stay clean
    other_nulls = set(nulls["transaction_id"]) - amount_null_ids
    assert not other_nulls & set(q.index)
    assert other_nulls <= set(read_clean(lk.storage)["transaction_id"])
    # default completeness columns (entity keys, event time) are never nulled by the generator
    assert checks["table.completeness"].passed and checks["table.completeness"].failed == 0


def test_completeness_counts_nulls_in_its_columns(defective, tmp_path: Path) -> None:
    lk, _ = defective

    def edit(c: dict) -> None:
        c["completeness"] = {"columns": ["merchant_category", "channel"], "min_ratio": 0.9, "severity": "warn"}

    workspace = tmp_path / "ws"  # a copy: the shared lake's clean dataset and reports stay as the fixture left them
    shutil.copytree(lk.workspace, workspace)
    result = validate(make_config(workspace, lk.src, edit), LocalStorage(workspace), now=NOW)
    nulls = injected_rows(lk, "nulls")
    want = int((nulls["merchant_category"].isna() | nulls["channel"].isna()).sum())
    assert want
    comp = by_id(result)["table.completeness"]
    assert (comp.failed, comp.total, comp.passed) == (want, result.report.rows_in, True)  # well above 90 %


def test_duplicates_are_counted_and_dropped(defective) -> None:
    lk, result = defective
    dups = by_id(result)["table.duplicates"]
    n = len(lk.injected["duplicates"])
    assert dups.failed == n and not dups.passed and dups.severity == "warn"
    assert f"{n:,} exact duplicates, 0 key duplicates" in dups.message
    assert result.report.rows_dropped_duplicates == n
    clean = read_clean(lk.storage)
    assert clean["transaction_id"].is_unique
    assert set(lk.injected["duplicates"]) <= set(clean["transaction_id"])  # one copy kept


def test_row_accounting_and_nothing_good_is_lost(defective) -> None:
    lk, result = defective
    r = result.report
    assert_accounting(result)
    clean = read_clean(lk.storage)
    assert len(clean) == r.rows_clean
    quarantined = set(read_quarantine(result)["transaction_id"])
    assert len(quarantined) == r.rows_quarantined
    assert quarantined == expected_quarantine_ids(lk)  # nothing else is flagged
    all_ids = set(lk.frame["transaction_id"])
    defects = set().union(*(lk.injected[k] for k in DEFECTS if k != "duplicates"))
    good = all_ids - defects
    assert good <= set(clean["transaction_id"])
    assert set(clean["transaction_id"]) == all_ids - quarantined
    assert not quarantined & set(clean["transaction_id"])
    # clean rows are unchanged, typed as the lake
    want = lk.frame.drop_duplicates("transaction_id").set_index("transaction_id").loc[clean["transaction_id"]]
    assert (clean["amount"].to_numpy() == want["amount"].to_numpy()).all()
    assert r.gate_passed and 0 < r.quality_score < 100


def test_quarantine_file_names_the_failing_checks(defective) -> None:
    lk, result = defective
    q = read_quarantine(result)
    qchecks = [c.check for c in row_checks(lk.config().contract) if c.severity == "quarantine"]
    check_cols = [c for c in q.columns if c.startswith("_check:")]
    assert check_cols == [f"_check:{c}" for c in qchecks]
    assert "_reasons" in q.columns
    assert list(q.columns[: len(lk.frame.columns)]) == list(lk.frame.columns)
    for _, row in q.iterrows():
        failing = [c.removeprefix("_check:") for c in check_cols if pd.notna(row[c])]
        assert failing, row["transaction_id"]
        for check in failing:
            assert f"{check}: " in row["_reasons"]
        assert row["_reasons"].count(";") == len(failing) - 1
    # the reason matches the injected defect
    q = q.set_index("transaction_id")
    bad = injected_rows(lk, "out_of_range").set_index("transaction_id")
    for tx, frow in bad.iterrows():
        check = (
            "amount.min"
            if frow["amount"] < 0
            else "hour_of_day.max"
            if frow["hour_of_day"] > 23
            else "distance_from_home_km.min"
        )
        assert q.loc[tx, "_reasons"].startswith(f"{check}: "), (tx, q.loc[tx, "_reasons"])
    # per-check counts in the file agree with the report (no duplicates among quarantined rows)
    checks = by_id(result)
    for c in qchecks:
        assert int(q[f"_check:{c}"].notna().sum()) == checks[c].failed


def test_html_and_json_reports(defective) -> None:
    lk, result = defective
    r = result.report
    failing = [c.check for c in r.checks if not c.passed]
    assert {"amount.min", "channel.allowed", "table.duplicates", "rule.hour_matches_timestamp"} <= set(failing)
    for check in failing:
        assert f'data-failing-check="{check}"' in result.html
        assert check in result.markdown
    score = f"{r.quality_score:.2f}".rstrip("0").rstrip(".")
    assert f">{score}<small>%</small>" in result.html
    assert Path(result.report_html_uri).read_text() == result.html
    body = json.loads(Path(result.report_json_uri).read_text())
    assert body["quality_score"] == r.quality_score and body["gate_passed"] is True
    assert body["rows_in"] == r.rows_in and body["rows_clean"] == r.rows_clean
    checks = {c["check"]: c for c in body["checks"]}
    assert set(checks) == {c.check for c in r.checks}
    assert checks["amount.min"]["rate"] == pytest.approx(by_id(result)["amount.min"].rate)
    assert checks["amount.min"]["failed"] == by_id(result)["amount.min"].failed
    assert checks["amount.min"]["examples"]  # offending rows are shown
    latest = json.loads(lk.storage.read_text("reports/transactions/quality/latest.json"))
    assert latest["run_id"] == r.run_id


# --- duplicate modes on hand-made data --------------------------------------------------------------------------

DUP_ROWS = [
    "tx-1,c-1,m-1,2026-01-05T01:00:00Z,10.0,grocery,pos,1.0,1,0",
    "tx-1,c-1,m-1,2026-01-05T01:00:00Z,10.0,grocery,pos,1.0,1,0",  # exact duplicate
    "tx-2,c-2,m-1,2026-01-05T02:00:00Z,20.0,grocery,pos,1.0,2,0",  # first seen
    "tx-2,c-2,m-1,2026-01-05T04:00:00Z,30.0,grocery,pos,1.0,4,0",  # latest event time
    "tx-2,c-2,m-1,2026-01-05T03:00:00Z,25.0,grocery,pos,1.0,3,0",  # last seen, not latest
    "tx-3,c-3,m-2,2026-01-05T05:00:00Z,5.0,retail,online,2.0,5,0",
]


def dup_lake(tmp_path: Path, mode: str) -> tuple[Config, LocalStorage]:
    src = write_csv(tmp_path / "dups.csv", DUP_ROWS)

    def edit(c: dict) -> None:
        min_rows_one(c)
        c["duplicates"] = {"keys": ["transaction_id"], "mode": mode}

    cfg = make_config(tmp_path / "ws", src, edit)
    storage = LocalStorage(tmp_path / "ws")
    assert ingest(cfg, storage).rows_written == len(DUP_ROWS)
    return cfg, storage


@pytest.mark.parametrize(("mode", "tx2_amount"), [("drop", 20.0), ("keep_latest", 30.0)])
def test_duplicate_modes_keep_one_row_per_key(tmp_path: Path, mode: str, tx2_amount: float) -> None:
    cfg, storage = dup_lake(tmp_path, mode)
    result = validate(cfg, storage, now=NOW)
    r = result.report
    assert r.gate_passed and (r.rows_in, r.rows_clean, r.rows_dropped_duplicates) == (6, 3, 3)
    assert_accounting(result)
    dups = by_id(result)["table.duplicates"]
    assert dups.failed == 3 and dups.severity == "warn"
    assert "1 exact duplicates, 2 key duplicates" in dups.message
    clean = read_clean(storage).set_index("transaction_id").sort_index()
    assert list(clean.index) == ["tx-1", "tx-2", "tx-3"]
    assert clean.loc["tx-2", "amount"] == tx2_amount
    assert clean.loc["tx-1", "amount"] == 10.0


def test_duplicate_mode_fail_fails_the_gate_and_drops_nothing(tmp_path: Path) -> None:
    cfg, storage = dup_lake(tmp_path, "fail")
    result = validate(cfg, storage, now=NOW)
    r = result.report
    dups = by_id(result)["table.duplicates"]
    assert dups.severity == "error" and not dups.passed and dups.failed == 3
    assert not r.gate_passed and r.rows_dropped_duplicates == 0
    assert (r.rows_clean, r.rows_quarantined) == (6, 0)
    assert "table.duplicates" in r.gate_message() and "(3 of 6 failing)" in r.gate_message()
    assert result.clean_manifest_uri is None and lake.read_manifest(storage, CLEAN) is None


# --- the gate -------------------------------------------------------------------------------------------------


def test_failed_error_check_blocks_the_clean_dataset(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=2000, nulls=0.04)
    first = validate(lk.config(), lk.storage, now=NOW)
    assert first.report.gate_passed and first.clean_manifest_uri is not None
    manifest_before = lk.storage.read_text(layout.manifest_key(CLEAN))
    files_before = lk.storage.list(f"lake/{CLEAN}/data/")
    nulls = injected_rows(lk, "nulls")
    missing_amount = int(nulls["amount"].isna().sum())
    assert missing_amount

    def strict(c: dict) -> None:
        c["completeness"] = {"columns": ["amount"], "min_ratio": 1.0, "severity": "error"}

    result = validate(lk.config(strict), lk.storage, now=NOW)
    r = result.report
    assert not r.gate_passed and not result.already_validated
    assert [c.check for c in r.failed_errors] == ["table.completeness"]
    msg = r.gate_message()
    assert msg.startswith("table.completeness: ")
    assert f"({missing_amount:,} of {len(lk.frame):,} failing)" in msg
    assert result.clean_manifest_uri is None
    assert lk.storage.read_text(layout.manifest_key(CLEAN)) == manifest_before
    assert lk.storage.list(f"lake/{CLEAN}/data/") == files_before
    # the report is still written so the failure can be inspected
    assert json.loads(Path(result.report_json_uri).read_text())["gate_passed"] is False
    assert 'data-failing-check="table.completeness"' in result.html


def test_min_rows_gate_on_fresh_workspace(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=1500)

    def big(c: dict) -> None:
        c["min_rows"] = {"value": 100_000, "severity": "error"}

    result = validate(lk.config(big), lk.storage, now=NOW)
    r = result.report
    assert not r.gate_passed and [c.check for c in r.failed_errors] == ["table.min_rows"]
    assert "table.min_rows" in r.gate_message() and "1,500" in r.gate_message()
    assert "(1 of 1 failing)" in r.gate_message()
    assert result.clean_manifest_uri is None and lake.read_manifest(lk.storage, CLEAN) is None
    assert lk.storage.list(f"lake/{CLEAN}/") == []


def test_error_row_check_names_examples_in_gate_message(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "src.csv",
        [
            "tx-1,c-1,m-1,2026-01-05T01:00:00Z,10.0,grocery,pos,1.0,1,0",
            "tx-2,c-1,m-1,2026-01-05T02:00:00Z,10.0,grocery,pos,1.0,2,7",  # is_fraud out of [0, 1], severity error
        ],
    )
    cfg = make_config(tmp_path / "ws", src, min_rows_one)
    storage = LocalStorage(tmp_path / "ws")
    ingest(cfg, storage)
    r = validate(cfg, storage, now=NOW).report
    assert not r.gate_passed and [c.check for c in r.failed_errors] == ["is_fraud.max"]
    assert "is_fraud.max" in r.gate_message() and "(1 of 2 failing)" in r.gate_message()
    assert "tx-2" in r.gate_message()


# --- freshness ------------------------------------------------------------------------------------------------


def one_day(c: dict) -> None:
    c["freshness"] = {"max_age": "1d", "severity": "warn"}


@pytest.mark.parametrize(
    ("edit", "delta", "fresh"),
    [
        (one_day, timedelta(hours=1), True),
        (one_day, timedelta(days=2), False),
        (None, timedelta(days=3649), True),  # demo contract: 3650d
        (None, timedelta(days=3651), False),
    ],
)
def test_freshness_against_injected_now(tmp_path: Path, edit, delta: timedelta, fresh: bool) -> None:
    lk = make_lake(tmp_path, rows=1200)
    newest = lk.frame["event_timestamp"].max().to_pydatetime()
    result = validate(lk.config(edit), lk.storage, now=newest + delta)
    check = by_id(result)["table.freshness"]
    assert check.passed is fresh and check.failed == int(not fresh) and check.severity == "warn"
    assert result.report.gate_passed  # a warning never fails the gate
    assert result.clean_manifest_uri is not None
    assert (result.report.quality_score == 100.0) is fresh


def test_freshness_is_re_evaluated_when_no_new_data_arrives(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=1200)
    newest = lk.frame["event_timestamp"].max().to_pydatetime()
    cfg = lk.config(one_day)
    assert by_id(validate(cfg, lk.storage, now=newest + timedelta(hours=1)))["table.freshness"].passed
    later = validate(cfg, lk.storage, now=newest + timedelta(days=30))
    assert later.already_validated  # the data did not change, but time did
    assert not by_id(later)["table.freshness"].passed and later.report.gate_passed
    assert 'data-failing-check="table.freshness"' in later.html


# --- business rules -------------------------------------------------------------------------------------------


def test_rule_quarantines_exactly_the_rows_it_rejects(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=3000)

    def rule(c: dict) -> None:
        c["rules"].append({"name": "amount_le_1000", "expr": "amount <= 1000", "severity": "quarantine"})

    result = validate(lk.config(rule), lk.storage, now=NOW)
    want = set(lk.frame["transaction_id"][lk.frame["amount"] > 1000])
    assert want  # the generator produces some large amounts
    check = by_id(result)["rule.amount_le_1000"]
    assert check.failed == len(want) and check.kind == "rule" and check.severity == "quarantine"
    q = read_quarantine(result)
    assert set(q["transaction_id"]) == want
    assert q["_check:rule.amount_le_1000"].notna().all()
    assert q["_reasons"].str.startswith("rule.amount_le_1000: ").all()
    assert result.report.rows_quarantined == len(want)
    assert result.report.rows_clean == len(lk.frame) - len(want)
    assert (read_clean(lk.storage)["amount"] <= 1000).all()
    assert_accounting(result)


def test_warn_rule_reports_but_keeps_rows(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=1200)

    def rule(c: dict) -> None:
        c["rules"].append({"name": "small", "expr": "amount <= 100", "severity": "warn"})

    result = validate(lk.config(rule), lk.storage, now=NOW)
    assert by_id(result)["rule.small"].failed == int((lk.frame["amount"] > 100).sum()) > 0
    assert result.report.rows_clean == len(lk.frame) and result.quarantine_uri is None


def test_rule_on_unknown_column_raises_config_error_naming_it(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=1200)

    def rule(c: dict) -> None:
        c["rules"].append({"name": "usd_limit", "expr": "amount_usd <= 1000"})

    with pytest.raises(ConfigError, match=r"usd_limit") as err:
        validate(lk.config(rule), lk.storage, now=NOW)
    assert "amount_usd" in str(err.value)
    assert lake.read_manifest(lk.storage, CLEAN) is None


# --- re-runs --------------------------------------------------------------------------------------------------


def test_rerun_is_skipped_until_new_data_arrives(tmp_path: Path) -> None:
    data = generate(DemoSpec(rows=3000, seed=9, defects=DefectSpec(out_of_range=0.01)))
    frame = data.frame
    cut = frame["event_timestamp"].iloc[len(frame) // 2]
    early, everything = tmp_path / "early.parquet", tmp_path / "all.parquet"
    write_frame(frame[frame["event_timestamp"] <= cut], early, "parquet")
    write_frame(frame, everything, "parquet")
    cfg = make_config(tmp_path / "ws", early)
    storage = LocalStorage(tmp_path / "ws")
    ingest(cfg, storage)

    first = validate(cfg, storage, now=NOW)
    again = validate(cfg, storage, now=NOW)
    assert not first.already_validated and again.already_validated
    keys = ("rows_in", "rows_clean", "rows_quarantined", "rows_dropped_duplicates", "quality_score")
    assert {k: getattr(again.report, k) for k in keys} == {k: getattr(first.report, k) for k in keys}
    assert again.report.gate_passed == first.report.gate_passed
    assert {c.check: (c.failed, c.passed) for c in again.report.checks} == {
        c.check: (c.failed, c.passed) for c in first.report.checks
    }
    assert again.quarantine_uri == first.quarantine_uri
    assert json.loads(Path(again.report_json_uri).read_text())["rows_clean"] == first.report.rows_clean
    assert again.clean_manifest_uri == first.clean_manifest_uri
    assert len(lake.read_manifest(storage, CLEAN).runs) == 1  # the skip commits nothing

    ingest(cfg, storage, source_uri=str(everything))
    third = validate(cfg, storage, now=NOW)
    assert not third.already_validated and third.report.run_id != first.report.run_id
    assert third.report.rows_in == len(frame) > first.report.rows_in
    assert third.report.rows_quarantined == len(data.injected["out_of_range"])
    assert_accounting(third)
    clean = read_clean(storage)
    assert len(clean) == third.report.rows_clean and clean["transaction_id"].is_unique
    assert len(lake.read_manifest(storage, CLEAN).runs) == 2


def test_contract_change_recomputes(tmp_path: Path) -> None:
    lk = make_lake(tmp_path, rows=1200)
    first = validate(lk.config(), lk.storage, now=NOW)

    def rule(c: dict) -> None:
        c["rules"].append({"name": "small", "expr": "amount <= 100", "severity": "warn"})

    second = validate(lk.config(rule), lk.storage, now=NOW)
    assert not second.already_validated and "rule.small" in by_id(second) and "rule.small" not in by_id(first)


def test_rows_rejected_at_ingestion_are_in_the_report(tmp_path: Path) -> None:
    data = generate(DemoSpec(rows=2000, seed=9, defects=DefectSpec(wrong_types=0.01)))
    src = tmp_path / "src.csv"
    write_frame(data.frame, src, "csv")
    storage = LocalStorage(tmp_path / "ws")
    cfg = demo_config(tmp_path / "ws", uri=str(src))
    ingested = ingest(cfg, storage)
    report = validate(cfg, storage, now=NOW).report
    parse = next(c for c in report.checks if c.check == "ingest.parse")
    assert parse.failed == ingested.rows_quarantined == len(data.injected["wrong_types"])
    assert not parse.passed and parse.severity == "quarantine" and report.gate_passed
    assert {e["_reason"].split(":")[0] for e in parse.examples} <= {"amount", "distance_from_home_km"}
    assert report.rows_in == len(data.frame)
    assert report.rows_in == report.rows_clean + report.rows_quarantined + report.rows_dropped_duplicates
    assert report.quality_score < 100


def test_ingest_rejects_are_counted_by_their_real_cause(tmp_path: Path) -> None:
    """A null key is missing, not unparsable: the report and the run summary say so, cause by cause."""
    src = tmp_path / "src.csv"
    src.write_text(
        HEADER + "t1,c1,m1,2026-01-01T01:00:00Z,1,grocery,pos,1,1,0\n"
        "t2,,m1,2026-01-01T02:00:00Z,1,grocery,pos,1,2,0\n"  # no customer: a required key
        "t3,,m1,2026-01-01T03:00:00Z,x,grocery,pos,1,3,0\n"  # no customer and an unparsable amount
        "t4,c1,m1,yesterday,1,grocery,pos,1,4,0\n"
        "t5,c1,m1\n"  # too few fields
    )
    storage = LocalStorage(tmp_path / "ws")
    cfg = make_config(tmp_path / "ws", src)
    ingest(cfg, storage)
    parse = by_id(validate(cfg, storage, now=NOW))["ingest.parse"]
    assert parse.failed == 4
    rows_failing = parse.message.split("; rows failing: ")[1]
    assert rows_failing.split(", ") == [
        "customer_id missing 2",
        "amount not a valid float64 1",
        "event_timestamp not a valid timestamp 1",
        "malformed CSV row 1",
    ]
    assert parse.message.startswith("required values (event time, entity keys) present")
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(quality_table(validate(cfg, storage, now=NOW).report.to_dict()))
    text = console.export_text()
    assert "4 failing: required values" in text and "customer_id missing 2" in text


def test_a_binary_label_that_is_not_0_or_1_fails_the_gate_naming_the_task(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "src.csv",
        [
            "tx-1,c-1,m-1,2026-01-05T01:00:00Z,10.0,grocery,pos,1.0,1,0",
            "tx-2,c-1,m-1,2026-01-05T02:00:00Z,10.0,grocery,pos,1.0,2,7",  # a numeric outcome, not 0/1
        ],
    )

    def unbounded_label(contract: dict) -> None:
        min_rows_one(contract)
        contract["columns"].pop("is_fraud")

    cfg = make_config(tmp_path / "ws", src, unbounded_label)
    storage = LocalStorage(tmp_path / "ws")
    ingest(cfg, storage)
    r = validate(cfg, storage, now=NOW).report
    assert not r.gate_passed and [c.check for c in r.failed_errors] == ["label.binary"]
    assert "training.task regression" in r.gate_message() and "(1 of 2 failing)" in r.gate_message()
