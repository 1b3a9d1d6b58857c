"""The validate engine (Arrow kernels, buffer hashes, threads) against a plain pandas + ``re`` implementation of the
same contract, on one lake where every kind of check fails somewhere: nulls, min, max, allowed values, regex and
max_length (on multi-byte text), a rule read in the source's time zone, a rule over several columns (quarantine),
completeness, and duplicates (exact copies and key conflicts, earlier and later, ties) in every mode. Report
counts and examples, clean rows and their date files, quarantined rows with their reasons: all must agree, in
batches of 1,000 rows and in one batch."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake, layout
from kfloop.components.ingest import ingest
from kfloop.components.validate import ValidateResult, validate
from kfloop.config import Config, load_config, parse_config
from kfloop.config.contract import ColumnRule
from kfloop.contract.checks import RowCheck, row_checks
from kfloop.contract.engine import CHECK_COLUMN_PREFIX, REASONS_COLUMN, REASONS_SEPARATOR
from kfloop.contract.report import MAX_EXAMPLES
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.storage import LocalStorage
from tests.conftest import DEMO_CONFIG

ROWS = 3000
ZONE = "America/Chicago"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY, TS = "transaction_id", "event_timestamp"
ENTITY_KEYS = ["customer_id", "merchant_id"]
COMPLETE = ["merchant_category", "channel", "note"]
NOTES = ["ok", "éééééé", "ééééééé", "abc1", None, "", "zz z", "ab"]  # 6 chars in 12 bytes pass, 7 chars fail
RULES = [
    # read in the source's zone: the demo's hour_of_day is the UTC hour, so most rows fail (warn)
    {"name": "local_hour", "expr": "hour_of_day == event_timestamp.dt.hour", "severity": "warn"},
    {"name": "far_needs_online", "expr": "distance_from_home_km <= amount * 2 or channel == 'online'"},
]
COLUMNS = {
    KEY: {"nullable": False, "regex": "tx-[0-9]+", "max_length": 16},
    "amount": {"nullable": False, "min": 0, "max": 5000},
    "merchant_category": {"allowed": ["grocery", "restaurant", "gas_station", "retail", "electronics", "travel"]},
    "channel": {"allowed": ["pos", "online", "atm"]},
    "distance_from_home_km": {"min": 0, "max": 500},
    "hour_of_day": {"nullable": False, "min": 0, "max": 23},
    "is_fraud": {"min": 0, "max": 1, "severity": "warn"},
    "note": {"regex": "[a-zé ]*", "max_length": 6},
}


def source_frame() -> pd.DataFrame:
    """Demo rows with defects, then every other kind of failure and duplicate written in by hand."""
    defects = DefectSpec(nulls=0.03, duplicates=0.02, out_of_range=0.03, unknown_categories=0.03)
    frame = generate(DemoSpec(rows=ROWS, seed=3, defects=defects)).frame
    rng = np.random.default_rng(7)
    frame["note"] = pd.Series(rng.choice(np.array(NOTES, dtype=object), len(frame)), dtype=object)
    ids = frame[KEY].to_numpy(dtype=object).copy()
    ids[rng.choice(len(frame), 20, replace=False)] = "TX-7"  # regex
    ids[rng.choice(len(frame), 10, replace=False)] = "tx-" + "9" * 20  # max_length
    frame[KEY] = ids
    frame.loc[rng.choice(len(frame), 15, replace=False), "is_fraud"] = 3
    # key conflicts: the same id again with other values, an hour earlier, an hour later, or at the same time
    base = frame.iloc[rng.choice(len(frame), 60, replace=False)].copy()
    base["amount"] = base["amount"] + 1.0
    base[TS] = base[TS] + pd.to_timedelta(rng.choice([-1, 0, 1], len(base)), unit="h")
    base["hour_of_day"] = base[TS].dt.hour
    return pd.concat([frame, base], ignore_index=True)


def make_config(workspace: Path, src: Path, mode: str, batch_rows: int) -> Config:
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(workspace)}
    data["source"].update(uri=str(src), format="parquet", timezone=ZONE, batch_rows=batch_rows)
    data["source"]["columns"]["note"] = "string"
    contract = data["contract"]
    contract["columns"] = {name: {"severity": "quarantine", **rule} for name, rule in COLUMNS.items()}
    contract["rules"] = RULES
    contract["completeness"] = {"columns": COMPLETE, "min_ratio": 0.5, "severity": "warn"}
    contract["min_rows"] = {"value": 1, "severity": "error"}
    contract["duplicates"] = {"keys": [KEY], "mode": mode}
    return parse_config(data, "test")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reference")
    src = root / "src.parquet"
    write_frame(source_frame(), src, "parquet")
    workspace = root / "lake-ws"
    config = make_config(workspace, src, "keep_latest", 1000)
    assert ingest(config, LocalStorage(workspace)).rows_written == ROWS + int(0.02 * ROWS) + 60
    return workspace, src


# --- the reference: pandas and Python's re, row order as the lake lists its files ------------------------------------


def lake_rows(config: Config, storage: LocalStorage) -> pa.Table:
    manifest = lake.read_manifest(storage, config.source.dataset)
    assert manifest is not None
    tables = [pq.read_table(storage.local_path(f.key)).select(list(config.source.columns)) for f in manifest.files]
    return pa.concat_tables(tables)


def column_failures(s: pd.Series, kind: str, rule: ColumnRule) -> np.ndarray:
    na = s.isna()
    if kind == "nullable":
        bad = na
    elif kind == "min":
        bad = (s < rule.min) & ~na
    elif kind == "max":
        bad = (s > rule.max) & ~na
    elif kind == "allowed":
        bad = ~s.isin(rule.allowed) & ~na
    elif kind == "regex":
        bad = s.map(lambda v: v is not None and re.fullmatch(rule.regex, v) is None)
    else:
        bad = s.map(lambda v: v is not None and len(v) > rule.max_length)
    return bad.to_numpy(dtype=bool)


def rule_failures(df: pd.DataFrame, name: str) -> np.ndarray:
    """The two rules by hand; a row missing a value the rule reads passes it (nullability is another check)."""
    if name == "local_hour":
        ok = df["hour_of_day"] == df[TS].dt.tz_convert(ZONE).dt.hour
        missing = df[["hour_of_day", TS]].isna().any(axis=1)
    else:
        ok = (df["distance_from_home_km"] <= df["amount"] * 2) | (df["channel"] == "online")
        missing = df[["distance_from_home_km", "amount", "channel"]].isna().any(axis=1)
    return (~ok & ~missing).to_numpy(dtype=bool)


def duplicate_plan(df: pd.DataFrame, mode: str) -> tuple[np.ndarray, int, int]:
    """(rows dropped, exact copies, key conflicts): one row kept per key by ``mode``; null keys repeat nothing."""
    pos = pd.Series(np.arange(len(df)), index=df.index)
    keyed = df[df[KEY].notna()]
    if mode == "keep_latest":
        kept = keyed.assign(_pos=pos).sort_values([TS, "_pos"]).drop_duplicates(KEY, keep="last")["_pos"]
    else:
        kept = pos[keyed.drop_duplicates(KEY, keep="last" if mode == "keep_last_ingested" else "first").index]
    drop = np.zeros(len(df), dtype=bool)
    if mode != "fail":
        drop[np.setdiff1d(pos[keyed.index].to_numpy(), kept.to_numpy())] = True
    repeated = keyed[KEY].duplicated(keep=False)
    exact = int(keyed.duplicated(keep="first").sum())
    dupes = int(repeated.sum()) - keyed.loc[repeated, KEY].nunique()
    return drop, exact, dupes - exact


def examples(table: pa.Table, mask: np.ndarray, columns: list[str]) -> list[dict]:
    rows = np.flatnonzero(mask)[:MAX_EXAMPLES]
    return table.select(columns).take(pa.array(rows)).to_pylist()


def reference(config: Config, table: pa.Table, checks: list[RowCheck]) -> dict:
    df = table.to_pandas()
    mode = config.contract.duplicates.mode
    ids = [KEY, *ENTITY_KEYS]
    failures = {}
    for check in checks:
        if check.kind == "rule":
            name = check.check.removeprefix("rule.")
            failures[check.check] = rule_failures(df, name)
        else:
            failures[check.check] = column_failures(df[check.column], check.kind, config.contract.columns[check.column])
    rule_cols = {
        "rule.local_hour": ["hour_of_day", TS],
        "rule.far_needs_online": ["distance_from_home_km", "amount", "channel"],
    }
    check_examples = {
        c.check: examples(table, failures[c.check], list(dict.fromkeys([*ids, *rule_cols.get(c.check, [c.column])])))
        for c in checks
    }
    drop, exact, conflicts = duplicate_plan(df, mode)
    qchecks = [c for c in checks if c.severity == "quarantine"]
    quarantined = np.logical_or.reduce([failures[c.check] for c in qchecks]) & ~drop
    incomplete = df[COMPLETE].isna().any(axis=1).to_numpy()
    reasons = [
        REASONS_SEPARATOR.join(f"{c.check}: {c.message}" for c in qchecks if failures[c.check][i])
        for i in np.flatnonzero(quarantined)
    ]
    return {
        "failed": {c: int(m.sum()) for c, m in failures.items()},
        "examples": check_examples,
        "drop": drop,
        "exact": exact,
        "conflicts": conflicts,
        "duplicate_examples": examples(table, drop, [*ids, TS]),
        "incomplete": int(incomplete.sum()),
        "incomplete_examples": examples(table, incomplete, list(dict.fromkeys([*ids, *COMPLETE]))),
        "clean": table.filter(pa.array(~(quarantined | drop))),
        "quarantined": table.filter(pa.array(quarantined)),
        "check_columns": {c.check: failures[c.check][quarantined] for c in qchecks},
        "reasons": reasons,
        "newest": pd.Timestamp(df[TS].max()).to_pydatetime(),
    }


def multiset(table: pa.Table) -> Counter:
    return Counter(tuple(row.values()) for row in table.to_pylist())


# --- the comparison ------------------------------------------------------------------------------------------------


def run(ingested: tuple[Path, Path], tmp_path: Path, mode: str, batch_rows: int) -> tuple[Config, ValidateResult]:
    template, src = ingested
    workspace = tmp_path / "ws"
    shutil.copytree(template, workspace)
    config = make_config(workspace, src, mode, batch_rows)
    return config, validate(config, LocalStorage(workspace), now=NOW)


@pytest.mark.parametrize(
    ("mode", "batch_rows"),
    [("keep_latest", 1000), ("keep_latest", 100_000), ("drop", 1000), ("keep_last_ingested", 1000), ("fail", 1000)],
)
def test_engine_matches_a_pandas_reference(ingested, tmp_path: Path, mode: str, batch_rows: int) -> None:
    config, result = run(ingested, tmp_path, mode, batch_rows)
    storage = LocalStorage(tmp_path / "ws")
    table = lake_rows(config, storage)
    checks = row_checks(config.contract, config.source.timezone)
    ref = reference(config, table, checks)
    report = result.report
    by_id = {c.check: c for c in report.checks}

    # every kind of check fails somewhere, so nothing below compares zeros with zeros
    assert {c.kind for c in checks if ref["failed"][c.check]} == {
        "nullable",
        "min",
        "max",
        "allowed",
        "regex",
        "max_length",
        "rule",
    }
    assert ref["exact"] and ref["conflicts"] and ref["incomplete"]
    for check in checks:
        got = by_id[check.check]
        assert (got.failed, got.total, got.examples) == (
            ref["failed"][check.check],
            table.num_rows,
            ref["examples"][check.check],
        ), check.check

    dups = by_id["table.duplicates"]
    assert dups.failed == ref["exact"] + ref["conflicts"]
    assert f"{ref['exact']:,} exact duplicates, {ref['conflicts']:,} key duplicates" in dups.message
    assert dups.examples == ref["duplicate_examples"]
    assert report.rows_dropped_duplicates == int(ref["drop"].sum())
    completeness = by_id["table.completeness"]
    assert (completeness.failed, completeness.examples) == (ref["incomplete"], ref["incomplete_examples"])
    assert str(ref["newest"]) in by_id["table.freshness"].message
    assert (report.rows_in, report.rows_clean, report.rows_quarantined) == (
        table.num_rows,
        ref["clean"].num_rows,
        ref["quarantined"].num_rows,
    )

    # clean rows: the same multiset, one event date (UTC) per file; none when duplicates fail the gate
    manifest = lake.read_manifest(storage, layout.clean_dataset(config.source.dataset))
    if mode == "fail":
        assert not report.gate_passed and manifest is None and result.clean_manifest_uri is None
    else:
        assert manifest is not None and report.gate_passed
        parts = []
        for f in manifest.files:
            part = pq.read_table(storage.local_path(f.key))
            dates = {ts.astimezone(UTC).date().isoformat() for ts in part.column(TS).to_pylist()}
            assert dates == {f.event_date}, f.key
            parts.append(part)
        assert multiset(pa.concat_tables(parts)) == multiset(ref["clean"])

    # quarantined rows: the same rows, each with its reasons and one column per quarantine check
    quarantine = pq.read_table(result.quarantine_uri)
    data_cols = list(config.source.columns)
    got = Counter(
        (
            tuple(r[c] for c in data_cols),
            r[REASONS_COLUMN],
            tuple(r[f"{CHECK_COLUMN_PREFIX}{c}"] is not None for c in ref["check_columns"]),
        )
        for r in quarantine.to_pylist()
    )
    want_hits = list(zip(*ref["check_columns"].values(), strict=True))
    want = Counter(
        (tuple(r.values()), reason, tuple(bool(h) for h in hits))
        for r, reason, hits in zip(ref["quarantined"].to_pylist(), ref["reasons"], want_hits, strict=True)
    )
    assert got == want
    assert any(REASONS_SEPARATOR in reason for reason in ref["reasons"])  # rows failing several checks too
