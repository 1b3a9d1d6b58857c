"""kfloop.derive: cast, then derived columns in order; failing rows leave with the column and the reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from kfloop.cast import REASON_COLUMN, ROW_COLUMN, reason_causes
from kfloop.config import SourceConfig
from kfloop.derive import cast_and_derive
from kfloop.schema import arrow_schema


def source(**extra: object) -> SourceConfig:
    data = {
        "uri": "unused",
        "entity_keys": ["trip_id"],
        "timestamp_column": "event_time",
        "label_column": "late",
        "columns": {"date": "string", "time": "string", "route": "string", "delay": "float64"},
        "derived": {
            "event_time": {"expression": "timestamp(date, time)", "type": "timestamp"},
            "trip_id": {"expression": "concat(route, '-', date)", "type": "string"},
            "late": {"expression": "delay > 5", "type": "int64"},
            "hour": {"expression": "hour(event_time)", "type": "int64"},
            "weekday": {"expression": "day_of_week(event_time)", "type": "int64"},
        },
        "timezone": "America/New_York",
    }
    return SourceConfig.model_validate_json(json.dumps(data | extra))


def run(cfg: SourceConfig, **cols: list) -> tuple[pa.Table, pa.Table]:
    table = pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()})
    result = cast_and_derive(
        table, cfg, pa.array(range(2, 2 + table.num_rows), pa.int64()), (*cfg.entity_keys, cfg.timestamp_column)
    )
    return result.good, result.bad


def test_derived_columns_are_computed_in_order_and_typed() -> None:
    cfg = source()
    good, bad = run(
        cfg, date=["2024-07-01", "2024-07-06"], time=["08:15", "23:00"], route=["R1", "R2"], delay=["2", "9.5"]
    )
    assert good.schema == arrow_schema(cfg) and bad.num_rows == 0
    assert good.column_names == ["date", "time", "route", "delay", "event_time", "trip_id", "late", "hour", "weekday"]
    assert good.column("event_time").to_pylist() == [
        datetime(2024, 7, 1, 12, 15, tzinfo=UTC),
        datetime(2024, 7, 7, 3, tzinfo=UTC),
    ]
    assert good.column("trip_id").to_pylist() == ["R1-2024-07-01", "R2-2024-07-06"]
    assert good.column("late").to_pylist() == [0, 1]
    assert good.column("hour").to_pylist() == [8, 23]  # local hour, not UTC
    assert good.column("weekday").to_pylist() == [0, 5]  # Monday, Saturday (local)


def test_failing_rows_are_quarantined_with_column_and_reason() -> None:
    cfg = source()
    good, bad = run(
        cfg,
        date=["2024-03-10", "2024-02-30", "2024-11-03", "2024-07-01", "2024-07-02"],
        time=["02:30", "10:00", "01:30", "10:00", "10:00"],
        route=["R1", "R2", "R3", None, "R5"],
        delay=["1", "1", "1", "1", "x"],
    )
    reasons = dict(zip(bad.column(ROW_COLUMN).to_pylist(), bad.column(REASON_COLUMN).to_pylist(), strict=True))
    assert reasons == {
        6: "delay: 'x' is not a valid float64",
        2: "event_time: '2024-03-10 02:30' is not a valid timestamp "
        "(local time skipped by a daylight-saving change in America/New_York)",
        3: "event_time: '2024-02-30 10:00' is not a valid timestamp",
        5: "trip_id: missing value (required)",
    }
    assert bad.column_names[: len(cfg.columns)] == list(cfg.columns)  # one quarantine layout
    assert reason_causes(reasons[3], cfg.columns) == ["event_time not a valid timestamp"]
    # the ambiguous fall-back hour: its first occurrence, EDT (UTC-4)
    assert good.column("event_time").to_pylist() == [datetime(2024, 11, 3, 5, 30, tzinfo=UTC)]


def test_timezone_applies_to_naive_timestamp_columns_and_keeps_offsets() -> None:
    cfg = SourceConfig.model_validate_json(
        json.dumps(
            {
                "uri": "unused",
                "entity_keys": ["k"],
                "timestamp_column": "ts",
                "columns": {"k": "string", "ts": "timestamp"},
                "timezone": "Europe/Berlin",
            }
        )
    )
    good, bad = run(
        cfg,
        k=["a", "b", "c", "d"],
        ts=["2024-01-15 10:00", "2024-01-15T10:00:00+05:00", "2024-03-31 02:30", "2024-10-27 02:30"],
    )
    assert good.column("ts").to_pylist() == [
        datetime(2024, 1, 15, 9, tzinfo=UTC),
        datetime(2024, 1, 15, 5, tzinfo=UTC),
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # ambiguous: the first (CEST) occurrence
    ]
    assert bad.column(REASON_COLUMN).to_pylist() == [
        "ts: '2024-03-31 02:30' is not a valid timestamp "
        "(local time skipped by a daylight-saving change in Europe/Berlin)"
    ]


def test_typed_naive_timestamps_are_read_in_the_zone() -> None:
    cfg = source(derived={}, entity_keys=["route"], timestamp_column="t", label_column=None,
                 columns={"route": "string", "t": "timestamp"}, timezone="Asia/Tokyo")  # fmt: skip
    table = pa.table({"route": ["a"], "t": pa.array([datetime(2024, 1, 1, 9, 0, 0, 1500)], pa.timestamp("us"))})
    result = cast_and_derive(table, cfg, pa.array([1]), ("t",))
    assert result.good.column("t").to_pylist() == [datetime(2024, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)]


def test_config_round_trip_keeps_derived_columns_once() -> None:
    cfg = source()
    assert list(cfg.file_columns) == ["date", "time", "route", "delay"]
    dumped = cfg.model_dump(mode="json")
    assert list(dumped["columns"]) == list(cfg.file_columns)
    assert SourceConfig.model_validate_json(json.dumps(dumped)) == cfg
