"""Contract building blocks: duplicate detection across batches, row-check evaluation, contract config validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from kfloop.config import load_config, parse_config
from kfloop.config.contract import ColumnRule, ContractConfig, Duplicates, RowRule
from kfloop.contract.checks import check_rules_compile, row_checks
from kfloop.contract.duplicates import DuplicateIndex, DuplicateOutcome
from kfloop.errors import ConfigError
from tests.conftest import DEMO_CONFIG

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def batch(ids: list[str], times: list[float], amounts: list[float | None], flags: list[int | None] | None = None):
    """A small lake-like table: key ``id``, event time ``t``, a float and an int column."""
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "t": pa.array([hours(h) for h in times], TS),
            "amount": pa.array(amounts, pa.float64()),
            "flag": pa.array(flags if flags is not None else [0] * len(ids), pa.int64()),
        }
    )


class _Index:
    """Both passes over in-memory batches, as validate runs them over the lake."""

    def __init__(self, idx: DuplicateIndex, tables: tuple[pa.Table, ...]) -> None:
        self.idx, self.tables = idx, tables

    def resolve(self) -> DuplicateOutcome:
        return self.idx.resolve(list(self.tables))


def index(mode: str, *tables: pa.Table, keys: tuple[str, ...] = ("id",)) -> _Index:
    idx = DuplicateIndex(Duplicates(keys=keys, mode=mode), "t")  # type: ignore[arg-type]
    for t in tables:
        idx.add(t)
    return _Index(idx, tables)


# Global positions: 0 a@1 10 | 1 b@1 5 | 2 c@2 7 || 3 a@1 10 (exact dup of 0) | 4 c@5 8 | 5 c@3 9 | 6 d@1 1
FIRST = batch(["a", "b", "c"], [1, 1, 2], [10.0, 5.0, 7.0])
SECOND = batch(["a", "c", "c", "d"], [1, 5, 3, 1], [10.0, 8.0, 9.0, 1.0])


# --- DuplicateIndex -------------------------------------------------------------------------------------------


def test_duplicates_drop_mode_keeps_first_seen_across_batches() -> None:
    out = index("drop", FIRST, SECOND).resolve()
    assert (out.exact, out.key_conflicts, out.duplicates) == (1, 2, 3)
    assert out.drop.tolist() == [False, False, False, True, True, True, False]


def test_duplicates_keep_latest_keeps_latest_event_time_across_batches() -> None:
    out = index("keep_latest", FIRST, SECOND).resolve()
    assert (out.exact, out.key_conflicts) == (1, 2)
    # key c: rows at t=2 (pos 2), t=5 (pos 4), t=3 (pos 5) -> the t=5 row survives, not the last seen;
    # key a: two identical rows at the same time -> a tie, so the last seen (pos 3) survives
    assert out.drop.tolist() == [True, False, True, False, False, True, False]


def test_duplicates_keep_latest_ties_go_to_last_seen() -> None:
    out = index("keep_latest", batch(["a", "a"], [1, 1], [1.0, 2.0]), batch(["a"], [1], [3.0])).resolve()
    assert out.drop.tolist() == [True, True, False]


def test_duplicates_keep_last_ingested_ignores_event_time() -> None:
    out = index("keep_last_ingested", FIRST, SECOND).resolve()
    assert (out.exact, out.key_conflicts) == (1, 2)
    # key c: rows at t=2 (pos 2), t=5 (pos 4), t=3 (pos 5) -> the last seen (pos 5) survives, older event or not
    assert out.drop.tolist() == [True, False, True, False, True, False, False]


def test_duplicates_fail_mode_counts_but_drops_nothing() -> None:
    out = index("fail", FIRST, SECOND).resolve()
    assert (out.exact, out.key_conflicts) == (1, 2)
    assert not out.drop.any() and len(out.drop) == 7


def test_duplicates_composite_keys_and_exact_copies_of_kept_rows() -> None:
    # same id, different flag -> distinct composite keys; exact copy of the kept row is an exact duplicate
    first = batch(["a", "a"], [1, 1], [1.0, 1.0], [0, 1])
    second = batch(["a", "a"], [1, 2], [1.0, 2.0], [1, 1])
    out = index("keep_latest", first, second, keys=("id", "flag")).resolve()
    assert (out.exact, out.key_conflicts) == (1, 1)
    assert out.drop.tolist() == [False, True, True, False]


@pytest.mark.parametrize("mode", ["drop", "keep_latest", "keep_last_ingested", "fail"])
def test_duplicates_none_and_empty(mode: str) -> None:
    out = index(mode, FIRST, batch(["d", "e"], [1, 1], [1.0, 1.0])).resolve()
    assert (out.exact, out.key_conflicts) == (0, 0) and not out.drop.any()
    empty = index(mode).resolve()
    assert (empty.exact, empty.key_conflicts, len(empty.drop)) == (0, 0, 0)


def test_exact_duplicate_across_batches_when_other_batch_has_int_null() -> None:
    first = batch(["a", "b"], [1, 1], [1.0, 2.0], [1, None])  # flag null elsewhere in the batch
    second = batch(["a"], [1], [1.0], [1])  # exact copy of row 0
    out = index("drop", first, second).resolve()
    assert (out.exact, out.key_conflicts) == (1, 0)


def test_int_key_duplicate_across_batches_when_one_batch_has_null_key() -> None:
    first = batch(["a", "b"], [1, 1], [1.0, 2.0], [7, None])
    second = batch(["c"], [2], [3.0], [7])  # same key flag=7 as row 0, different values
    out = index("drop", first, second, keys=("flag",)).resolve()
    assert out.key_conflicts == 1
    assert out.drop.tolist() == [False, False, True]


# --- row checks -----------------------------------------------------------------------------------------------


def checks_by_id(contract: ContractConfig) -> dict:
    return {c.check: c for c in row_checks(contract)}


def test_row_checks_ids_kinds_and_severity() -> None:
    contract = ContractConfig(
        columns={
            "id": ColumnRule(nullable=False, regex="tx-[0-9]+", max_length=8),
            "amount": ColumnRule(min=0, max=100, severity="error"),
        },
        rules=(RowRule(name="small", expr="amount < 50", severity="warn"),),
    )
    got = {(c.check, c.kind, c.column, c.severity) for c in row_checks(contract)}
    assert got == {
        ("id.nullable", "nullable", "id", "quarantine"),
        ("id.regex", "regex", "id", "quarantine"),
        ("id.max_length", "max_length", "id", "quarantine"),
        ("amount.min", "min", "amount", "error"),
        ("amount.max", "max", "amount", "error"),
        ("rule.small", "rule", None, "warn"),
    }
    assert checks_by_id(ContractConfig(columns={"id": ColumnRule()})) == {}  # nothing declared, nothing checked


def test_nulls_fail_only_the_nullability_check() -> None:
    table = pa.table(
        {
            "s": pa.array(["tx-1", None, "zzz-long-value"], pa.string()),
            "x": pa.array([5.0, None, 500.0], pa.float64()),
            "n": pa.array([1, None, 99], pa.int64()),
        }
    )
    contract = ContractConfig(
        columns={
            "s": ColumnRule(nullable=False, allowed=("tx-1",), regex="tx-[0-9]+", max_length=5),
            "x": ColumnRule(min=0, max=100),
            "n": ColumnRule(nullable=False, min=0, max=10),
        }
    )
    masks = {cid: c.evaluate(table).tolist() for cid, c in checks_by_id(contract).items()}
    assert masks == {
        "s.nullable": [False, True, False],
        "s.allowed": [False, False, True],
        "s.regex": [False, False, True],
        "s.max_length": [False, False, True],
        "x.min": [False, False, False],
        "x.max": [False, False, True],
        "n.nullable": [False, True, False],
        "n.min": [False, False, False],
        "n.max": [False, False, True],
    }
    for mask in masks.values():
        assert isinstance(mask, list) and len(mask) == 3


def test_min_max_bounds_are_inclusive() -> None:
    table = pa.table({"x": pa.array([-0.01, 0.0, 23.0, 23.5], pa.float64())})
    checks = checks_by_id(ContractConfig(columns={"x": ColumnRule(min=0, max=23)}))
    assert checks["x.min"].evaluate(table).tolist() == [True, False, False, False]
    assert checks["x.max"].evaluate(table).tolist() == [False, False, False, True]


def test_regex_is_a_full_match() -> None:
    values = ["tx-12", "xtx-12", "tx-12x", "tx-", "tx-1\n", "TX-12"]
    table = pa.table({"s": pa.array(values, pa.string())})
    mask = checks_by_id(ContractConfig(columns={"s": ColumnRule(regex="tx-[0-9]+")}))["s.regex"].evaluate(table)
    assert mask.tolist() == [False, True, True, True, True, True]
    alt = checks_by_id(ContractConfig(columns={"s": ColumnRule(regex="a|b")}))["s.regex"]
    assert alt.evaluate(pa.table({"s": ["a", "b", "ab", "xa"]})).tolist() == [False, False, True, True]


def test_allowed_is_exact_and_case_sensitive() -> None:
    table = pa.table({"c": ["pos", "POS", "pos ", "atm"]})
    check = checks_by_id(ContractConfig(columns={"c": ColumnRule(allowed=("pos", "atm"))}))["c.allowed"]
    assert check.evaluate(table).tolist() == [False, True, True, False]


def test_max_length_counts_characters_not_bytes() -> None:
    table = pa.table({"s": ["abc", "äöü", "abcd"]})
    check = checks_by_id(ContractConfig(columns={"s": ColumnRule(max_length=3)}))["s.max_length"]
    assert check.evaluate(table).tolist() == [False, False, True]


def test_rules_leave_rows_with_missing_referenced_values_alone() -> None:
    table = pa.table(
        {
            "amount": pa.array([10.0, 200.0, None, 300.0, 5.0], pa.float64()),
            "limit": pa.array([100, 100, 100, None, 1], pa.int64()),
            "other": pa.array([None, None, None, None, None], pa.string()),
        }
    )
    contract = ContractConfig(rules=(RowRule(name="within_limit", expr="amount <= limit"),))
    (check,) = row_checks(contract)
    # row 2 (amount null) and row 3 (limit null) are left to nullability; a null in an unreferenced column is ignored
    assert check.evaluate(table).tolist() == [False, True, False, False, True]


def test_rule_does_not_confuse_column_name_prefixes() -> None:
    table = pa.table({"amount": [5.0, 50.0], "amount_limit": pa.array([None, None], pa.float64())})
    (check,) = row_checks(ContractConfig(rules=(RowRule(name="small", expr="amount < 10"),)))
    assert check.evaluate(table).tolist() == [False, True]


def test_rule_compile_names_the_rule_on_unknown_column() -> None:
    schema = pa.schema([pa.field("amount", pa.float64())])
    ok = ContractConfig(rules=(RowRule(name="pos", expr="amount >= 0"),))
    check_rules_compile(ok, schema)
    bad = ContractConfig(rules=(*ok.rules, RowRule(name="uses_missing", expr="amount_usd >= 0")))
    with pytest.raises(ConfigError, match=r"contract\.rules\.1 \(uses_missing\)"):
        check_rules_compile(bad, schema)


def test_mask_is_numpy_bool_over_chunked_columns() -> None:
    table = pa.concat_tables([pa.table({"x": [1.0, -1.0]}), pa.table({"x": [-2.0, 3.0]})])
    assert table.column("x").num_chunks == 2
    mask = checks_by_id(ContractConfig(columns={"x": ColumnRule(min=0)}))["x.min"].evaluate(table)
    assert mask.dtype == np.bool_ and mask.tolist() == [False, True, True, False]


# --- contract config validation -------------------------------------------------------------------------------


def demo_data() -> dict:
    return load_config(DEMO_CONFIG).model_dump(mode="json")


def test_demo_contract_loads() -> None:
    cfg = parse_config(demo_data(), "test")
    assert cfg.contract.duplicates is not None and cfg.contract.duplicates.keys == ("transaction_id",)
    assert {c.check for c in row_checks(cfg.contract)} >= {"amount.min", "hour_of_day.max", "channel.allowed"}


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda c: c["columns"].update(amount_usd={"min": 0}), "contract.columns.amount_usd"),
        (lambda c: c.update(duplicates={"keys": ["tx_id"], "mode": "drop"}), "contract.duplicates.keys (tx_id)"),
        (lambda c: c["completeness"].update(columns=["label"]), "contract.completeness.columns (label)"),
    ],
)
def test_contract_naming_unknown_column_fails_with_key_path(edit, path: str) -> None:
    data = demo_data()
    edit(data["contract"])
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test")
    assert path in str(err.value)
    assert "test" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda c: c["columns"]["amount"].update(min=10, max=1), "contract.columns.amount"),
        (lambda c: c["columns"]["transaction_id"].update(regex="tx-[0-9"), "contract.columns.transaction_id.regex"),
        (lambda c: c.update(freshness={"max_age": "3 weeks"}), "contract.freshness.max_age"),
        (lambda c: c["columns"]["amount"].update(severity="fatal"), "contract.columns.amount.severity"),
        (lambda c: c.update(duplicates={"keys": ["transaction_id"], "mode": "merge"}), "contract.duplicates.mode"),
        (lambda c: c["rules"].append({"name": "Bad Name", "expr": "amount > 0"}), "contract.rules.1.name"),
        (lambda c: c["completeness"].update(min_ratio=1.5), "contract.completeness.min_ratio"),
        (lambda c: c["columns"]["amount"].update(maximum=5), "contract.columns.amount.maximum"),
    ],
)
def test_invalid_contract_values_fail_with_key_path(edit, path: str) -> None:
    data = demo_data()
    edit(data["contract"])
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test")
    assert f"test: {path}" in str(err.value)


@pytest.mark.parametrize(
    ("column", "rule", "path"),
    [
        ("is_fraud", {"allowed": ["0", "1"]}, "contract.columns.is_fraud.allowed"),
        ("hour_of_day", {"regex": "[0-9]+"}, "contract.columns.hour_of_day.regex"),
        ("hour_of_day", {"max_length": 2}, "contract.columns.hour_of_day.max_length"),
        ("customer_id", {"min": 0}, "contract.columns.customer_id.min"),
        ("event_timestamp", {"max": 5}, "contract.columns.event_timestamp.max"),
    ],
)
def test_type_mismatched_column_rule_is_rejected_with_key_path(column: str, rule: dict, path: str) -> None:
    """A check that cannot apply to the column's source type fails at load, not as a pyarrow crash mid-run."""
    data = demo_data()
    data["contract"]["columns"][column] = rule
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test")
    assert path in str(err.value)


def test_rules_share_the_derived_columns_language_with_membership_and_local_time_parts() -> None:
    """Rules are the typed expression language of source.derived: `in` lists, abs, and pandas' `.dt.hour`
    spelling read as hour(...) in the source's time zone (22:30 UTC is 23:30 in Berlin in winter)."""
    table = pa.table(
        {
            "channel": pa.array(["pos", "web", None], pa.string()),
            "delta": pa.array([-3.0, 12.0, 1.0], pa.float64()),
            "t": pa.array([datetime(2026, 1, 5, 22, 30, tzinfo=UTC)] * 3, TS),
            "hour": pa.array([23, 22, 23], pa.int64()),
        }
    )
    rules = (
        RowRule(name="known_channel", expr="channel in ['pos', 'online', 'atm']"),
        RowRule(name="small_change", expr="abs(delta) < 10"),
        RowRule(name="local_hour", expr="hour == t.dt.hour"),
    )
    got = {c.check: c.evaluate(table).tolist() for c in row_checks(ContractConfig(rules=rules), "Europe/Berlin")}
    assert got == {
        "rule.known_channel": [False, True, False],  # a missing channel is left to nullability
        "rule.small_change": [False, True, False],
        "rule.local_hour": [False, True, False],
    }


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("amount + 1", "gives float64, not true/false"),
        ("amount.sum() > 0", "unknown function"),
        ("__import__('os').system('true')", "unknown function"),
        ("amount in ['a']", "cannot compare float64 with string"),
    ],
)
def test_a_rule_that_is_not_a_typed_true_false_expression_is_refused_at_load(expr: str, message: str) -> None:
    schema = pa.schema([pa.field("amount", pa.float64())])
    with pytest.raises(ConfigError, match=r"contract\.rules\.0 \(r\)") as info:
        check_rules_compile(ContractConfig(rules=(RowRule(name="r", expr=expr),)), schema)
    assert message in str(info.value)
