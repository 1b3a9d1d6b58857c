"""kfloop.expressions: the derived-column language types each expression at load and runs it on Arrow."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from kfloop.column_types import ColumnType as T
from kfloop.expressions import ExpressionError, evaluate, infer, storable

TYPES = {"amount": T.FLOAT64, "n": T.INT64, "d": T.STRING, "t": T.STRING, "id": T.STRING, "ts": T.TIMESTAMP}
TYPES |= {"ok": T.BOOL}
UTC_TS = pa.timestamp("us", tz="UTC")
TABLE = pa.table(
    {
        "amount": pa.array([50.0, 150.0, None], pa.float64()),
        "n": pa.array([1, 2, 3], pa.int64()),
        "d": ["2024-07-01", "2024-07-06", None],
        "t": ["08:15", "23:45:30", "00:00"],
        "id": ["a", "b", "c"],
        "ts": pa.array(
            [datetime(2024, 7, 1, 6, 15, tzinfo=UTC), datetime(2024, 7, 6, 21, 45, tzinfo=UTC), None], UTC_TS
        ),
        "ok": [True, False, None],
    }
)


def run(expression: str, zone: str | None = None) -> list:
    values, failures = evaluate(expression, TABLE, TYPES, zone)
    assert not failures.parts
    return values.to_pylist()


@pytest.mark.parametrize(
    ("expression", "typ", "values"),
    [
        ("amount > 100", T.BOOL, [False, True, None]),
        ("amount >= 50 and n < 2", T.BOOL, [True, False, False]),  # Kleene: unknown and false is false
        ("(amount > 100) | ok", T.BOOL, [True, True, None]),
        ("not ok", T.BOOL, [False, True, None]),
        ("amount * 2 + n", T.FLOAT64, [101.0, 302.0, None]),
        ("n / 2", T.FLOAT64, [0.5, 1.0, 1.5]),
        ("id + '-' + d", T.STRING, ["a-2024-07-01", "b-2024-07-06", None]),
        ("concat(id, '_', n)", T.STRING, ["a_1", "b_2", "c_3"]),
        ("hour(ts)", T.INT64, [6, 21, None]),
        ("day_of_week(ts)", T.INT64, [0, 5, None]),
        ("date(ts)", T.STRING, ["2024-07-01", "2024-07-06", None]),
        ("if_else(amount > 100, 'big', 'small')", T.STRING, ["small", "big", None]),
        ("coalesce(amount, n)", T.FLOAT64, [50.0, 150.0, 3.0]),
        ("is_null(d)", T.BOOL, [False, False, True]),
    ],
)
def test_each_operator_and_function_has_a_type_and_a_value(expression: str, typ: T, values: list) -> None:
    assert infer(expression, TYPES) is typ
    assert run(expression) == values


def test_local_parts_follow_the_zone() -> None:
    assert run("hour(ts)", "Europe/Berlin") == [8, 23, None]  # CEST, UTC+2
    assert run("day_of_week(ts)", "Asia/Tokyo") == [0, 6, None]  # 21:45 UTC Saturday is Sunday in Tokyo


def test_timestamp_from_date_and_time_parts_in_the_zone() -> None:
    assert infer("timestamp(d, t)", TYPES) is T.TIMESTAMP
    got = run("timestamp(d, t)", "Europe/Berlin")
    assert got == [datetime(2024, 7, 1, 6, 15, tzinfo=UTC), datetime(2024, 7, 6, 21, 45, 30, tzinfo=UTC), None]


def test_unparsable_parts_and_skipped_local_times_are_row_failures() -> None:
    table = pa.table({"d": ["2024-03-31", "2024-02-30", "2024-10-27"], "t": ["02:30", "10:00", "02:30"]})
    values, failures = evaluate("timestamp(d, t)", table, {"d": T.STRING, "t": T.STRING}, "Europe/Berlin")
    by_reason = {why: mask.tolist() for mask, _, why in failures.parts}
    assert by_reason == {
        "is not a valid timestamp (local time skipped by a daylight-saving change in Europe/Berlin)": [1, 0, 0],
        "is not a valid timestamp": [0, 1, 0],
    }
    # 02:30 on the fall-back night happens twice: the first (summer time, UTC+2) is taken
    assert values.to_pylist() == [None, None, datetime(2024, 10, 27, 0, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("amout > 1", "unknown column 'amout'"),
        ("amount > 'x'", "cannot compare float64 with string"),
        ("id - 1", "cannot combine string and int64"),
        ("hour(d)", "hour() needs timestamp, got string"),
        ("timestamp(amount)", "timestamp() needs string"),
        ("amount and ok", "and/or need true/false operands"),
        ("if_else(n, 1, 2)", "needs a true/false condition"),
        ("if_else(ok, 'a', 1)", "mixes string, int64"),
        ("open('x')", "unknown function"),
        ("__import__('os').system('x')", "unknown function"),
        ("id.upper()", "unknown function"),
        ("ts.year", "attribute is not allowed"),
        ("[n]", "a list is allowed only after 'in'"),
        ("n if ok else 2", "ifexp is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("amount >", "does not parse"),
        ("n % 2", "operator not allowed"),
        ("id in []", "an empty list (never true)"),
        ("id not in []", "an empty list (always true)"),
    ],
)
def test_bad_expressions_are_refused_before_running(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        infer(expression, TYPES)
    assert message in str(info.value)


def test_what_a_result_may_be_stored_as() -> None:
    assert storable(T.BOOL, T.INT64) and storable(T.INT64, T.FLOAT64) and storable(T.TIMESTAMP, T.STRING)
    assert not storable(T.FLOAT64, T.INT64) and not storable(T.STRING, T.TIMESTAMP)
