"""kfloop.cast: raw source columns to the configured types, with every failing row kept and explained."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest

from kfloop.cast import REASON_COLUMN, ROW_COLUMN, CastResult, cast_batch, quarantine_schema, reason_causes
from kfloop.column_types import ColumnType
from kfloop.schema import ARROW_TYPES

TS = ARROW_TYPES[ColumnType.TIMESTAMP]


def cast(values: list, typ: ColumnType, *, required: bool = False, raw_type: pa.DataType | None = None) -> CastResult:
    """One column named ``c``; rows numbered from 2 as in a CSV file (the header is line 1)."""
    schema = pa.schema([pa.field("c", ARROW_TYPES[typ])])
    table = pa.table({"c": pa.array(values, raw_type or pa.string())})
    return cast_batch(table, schema, pa.array(range(2, 2 + len(values)), pa.int64()), ("c",) if required else ())


def good(result: CastResult) -> list:
    return result.good.column("c").to_pylist()


def bad(result: CastResult) -> list[tuple]:
    return [(r["c"], r[ROW_COLUMN], r[REASON_COLUMN]) for r in result.bad.to_pylist()]


@pytest.mark.parametrize(
    ("typ", "values", "expected"),
    [
        (ColumnType.INT64, ["1", "-42", "9007199254740993"], [1, -42, 9007199254740993]),
        (ColumnType.INT64, [" 7 ", "3.0", "1e3"], [7, 3, 1000]),  # whole numbers written loosely still count
        (ColumnType.FLOAT64, ["1.5", "-2", "1e3"], [1.5, -2.0, 1000.0]),
        (ColumnType.STRING, ["a", "n/a", "-", "12"], ["a", "n/a", "-", "12"]),  # strings are kept as written
        (ColumnType.BOOL, ["true", "false", "1", "0"], [True, False, True, False]),
        (ColumnType.BOOL, ["Yes", "N", " TRUE ", "f"], [True, False, True, False]),
    ],
)
def test_valid_text_becomes_the_configured_type(typ: ColumnType, values: list, expected: list) -> None:
    result = cast(values, typ)
    assert result.good.schema.field("c").type == ARROW_TYPES[typ]
    assert good(result) == expected
    assert result.bad.num_rows == 0 and result.bad.schema == quarantine_schema(result.good.schema)


def test_nan_and_infinity_are_floats_not_errors() -> None:
    for extra in ([], ["oops"]):  # the fast path, and the per-row path a bad value forces
        out = good(cast(["nan", "NaN", "inf", "-inf", *extra], ColumnType.FLOAT64))
        assert len(out) == 4 and math.isnan(out[0]) and math.isnan(out[1]) and out[2:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        (ColumnType.INT64, "12abc"),
        (ColumnType.INT64, "1.5"),  # not a whole number: never rounded silently
        (ColumnType.INT64, "inf"),
        (ColumnType.FLOAT64, "1,5"),
        (ColumnType.BOOL, "maybe"),
        (ColumnType.TIMESTAMP, "yesterday"),
        (ColumnType.TIMESTAMP, "2024-13-01"),
    ],
)
def test_a_bad_value_is_quarantined_with_its_column_row_and_reason(typ: ColumnType, value: str) -> None:
    result = cast(["1", value, "1"] if typ is not ColumnType.TIMESTAMP else ["2024-03-01", value, "2024-03-02"], typ)
    assert result.good.num_rows == 2
    assert bad(result) == [(value, 3, f"c: {value!r} is not a valid {typ.value}")]


def test_good_and_bad_rows_together_are_every_input_row_in_order() -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("amount", pa.float64()), pa.field("ok", pa.bool_())])
    table = pa.table(
        {
            "id": ["1", "2", "x", "4", "5"],
            "amount": ["1.0", "zz", "3.0", "4.0", "5.0"],
            "ok": ["true", "false", "nope", "true", "false"],
        }
    )
    result = cast_batch(table, schema, pa.array([10, 11, 12, 13, 14], pa.int64()), ())
    assert result.good.to_pydict() == {"id": [1, 4, 5], "amount": [1.0, 4.0, 5.0], "ok": [True, True, False]}
    quarantined = result.bad.to_pylist()
    assert [r[ROW_COLUMN] for r in quarantined] == [11, 12]  # positions in the file, not in the batch
    assert quarantined[0]["amount"] == "zz" and quarantined[0]["id"] == "2"  # the whole row, as the source said
    # one row failing in two columns is quarantined once, with both reasons
    assert quarantined[1][REASON_COLUMN] == "id: 'x' is not a valid int64; ok: 'nope' is not a valid bool"
    assert result.bad.schema == quarantine_schema(schema)


def test_nulls_stay_null_unless_the_column_is_required() -> None:
    assert good(cast(["1", None, "3"], ColumnType.INT64)) == [1, None, 3]
    assert good(cast(["1", None, "x"], ColumnType.INT64)) == [1, None]  # also on the per-row path
    result = cast(["1", None, "3"], ColumnType.INT64, required=True)
    assert good(result) == [1, 3]
    assert bad(result) == [(None, 3, "c: missing value (required)")]


def test_a_column_with_no_values_at_all_is_nulls_of_the_configured_type() -> None:
    result = cast([None, None], ColumnType.TIMESTAMP, raw_type=pa.null())
    assert result.good.schema.field("c").type == TS and good(result) == [None, None]
    required = cast([None, None], ColumnType.TIMESTAMP, raw_type=pa.null(), required=True)
    assert required.good.num_rows == 0 and [r[1] for r in bad(required)] == [2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:30:00Z", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        ("2024-03-01T12:30:00+02:00", datetime(2024, 3, 1, 10, 30, tzinfo=UTC)),  # converted to UTC
        ("2024-03-01T00:30:00-05:00", datetime(2024, 3, 1, 5, 30, tzinfo=UTC)),
        ("2024-03-01T12:30:00", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),  # no offset: taken as UTC
        ("2024-03-01 12:30:00.250", datetime(2024, 3, 1, 12, 30, 0, 250_000, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_end_up_in_utc(text: str, expected: datetime) -> None:
    for values in ([text], [text, "not a time"]):  # the fast path, and the per-row path a bad value forces
        result = cast(values, ColumnType.TIMESTAMP)
        assert result.good.schema.field("c").type == TS
        assert good(result) == [expected], values


@pytest.mark.parametrize(
    ("raw", "typ", "expected"),
    [
        (pa.array([1, 2], pa.int32()), ColumnType.INT64, [1, 2]),
        (pa.array([1.5, 2.0], pa.float32()), ColumnType.FLOAT64, [1.5, 2.0]),
        (pa.array([3, 4], pa.int64()), ColumnType.FLOAT64, [3.0, 4.0]),
        (pa.array([5, 6], pa.int64()), ColumnType.STRING, ["5", "6"]),
        (pa.array([datetime(2024, 3, 1, 9)], pa.timestamp("ms")), ColumnType.TIMESTAMP, [datetime(2024, 3, 1, 9)]),
    ],
    ids=["int32", "float32", "int-as-float", "int-as-string", "naive-ms-timestamp"],
)
def test_typed_columns_from_parquet_or_avro_are_converted(raw: pa.Array, typ: ColumnType, expected: list) -> None:
    result = cast(raw.to_pylist(), typ, raw_type=raw.type)
    assert result.bad.num_rows == 0
    assert good(result) == [e.replace(tzinfo=UTC) if isinstance(e, datetime) else e for e in expected]


def test_a_typed_value_that_does_not_fit_is_quarantined_as_the_source_wrote_it() -> None:
    result = cast([1.0, 2.5], ColumnType.INT64, raw_type=pa.float64())
    assert good(result) == [1]
    assert bad(result) == [("2.5", 3, "c: 2.5 is not a valid int64")]


def test_a_categorical_column_keeps_its_categories_as_strings() -> None:
    """pandas categoricals reach the lake as Arrow dictionaries (e.g. from a Parquet file pandas wrote)."""
    raw = pa.Array.from_pandas(pd.Categorical(["grocery", "travel", None, "grocery"]))
    assert pa.types.is_dictionary(raw.type)
    schema = pa.schema([pa.field("c", pa.string())])
    result = cast_batch(pa.table({"c": raw}), schema, pa.array([1, 2, 3, 4], pa.int64()), ())
    assert result.good.schema == schema and good(result) == ["grocery", "travel", None, "grocery"]


def test_large_integers_survive_a_bad_neighbour() -> None:
    assert good(cast(["9007199254740993", "x"], ColumnType.INT64)) == [9007199254740993]


def test_a_naive_timestamp_after_an_offset_one_is_still_taken_as_utc() -> None:
    result = cast(["2024-03-01T12:00:00+02:00", "2024-03-01T12:00:00", "x"], ColumnType.TIMESTAMP)
    assert good(result) == [datetime(2024, 3, 1, 10, tzinfo=UTC), datetime(2024, 3, 1, 12, tzinfo=UTC)]


def test_reasons_read_back_as_causes_a_report_can_count() -> None:
    """A missing key is "missing", not "unparsable"; values holding separators do not split a reason."""
    result = cast([None, "x; c: y"], ColumnType.INT64, required=True)
    reasons = [reason for *_, reason in bad(result)]
    assert [reason_causes(r, ["c"]) for r in reasons] == [["c missing"], ["c not a valid int64"]]
    two = "id: 'x' is not a valid int64; ok: missing value (required)"
    assert reason_causes(two, ["id", "ok"]) == ["id not a valid int64", "ok missing"]
    assert reason_causes("malformed CSV row: expected 10 fields, got 3", ["id"]) == ["malformed CSV row"]
    assert reason_causes("not a JSON object", ["id"]) == ["not a JSON object"]
