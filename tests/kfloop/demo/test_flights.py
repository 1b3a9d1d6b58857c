"""The flights example's data: seeded, its columns those of examples/flights, a daylight-saving gap, NA
tokens for cancelled flights, attribute tables for every airport and hour, and a learnable delay."""

from __future__ import annotations

import csv
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import load_config
from kfloop.demo import flights
from kfloop.demo.flights import FlightsSpec, generate
from kfloop.timezones import parse_timestamps

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flights"


@pytest.fixture(scope="module")
def data() -> flights.FlightsData:
    return generate(FlightsSpec(rows=20_000))


def test_same_seed_same_frames_and_another_seed_others() -> None:
    a, b = generate(FlightsSpec(rows=2000, seed=3)), generate(FlightsSpec(rows=2000, seed=3))
    for name in ("flights", "airports", "weather"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.dst_gap == b.dst_gap
    other = generate(FlightsSpec(rows=2000, seed=4))
    assert not other.flights["arr_delay_min"].equals(a.flights["arr_delay_min"])


def test_columns_are_the_example_configs() -> None:
    cfg = load_config(EXAMPLE / "kfloop.yaml")
    assert {c: t.value for c, t in cfg.source.file_columns.items()} == flights.COLUMNS
    tables = {t.name: {c: ty.value for c, ty in t.source.file_columns.items()} for t in cfg.features.tables}
    assert tables == {"airports": flights.AIRPORT_COLUMNS, "weather": flights.WEATHER_COLUMNS}
    frame = generate(FlightsSpec(rows=50)).flights
    assert list(frame.columns) == list(flights.COLUMNS)
    allowed = cfg.contract.columns["origin"].allowed
    assert list(allowed) == list(flights.AIRPORTS) == list(cfg.contract.columns["dest"].allowed)
    assert list(cfg.contract.columns["carrier"].allowed) == list(flights.CARRIERS)


def test_the_example_configs_parse_with_what_they_show() -> None:
    cfg = load_config(EXAMPLE / "kfloop.yaml")
    assert cfg.training.task == "regression" and cfg.source.timezone == flights.ZONE
    assert cfg.source.null_values == (flights.NULL_TOKEN,)
    assert set(cfg.source.derived) == {"scheduled_departure", "flight_id", "dep_hour", "day_of_week"}
    assert set(cfg.source.available_after) == {"dep_delay_min", "arr_delay_min", "cancelled"}
    assert [(t.name, t.snapshot) for t in cfg.features.tables] == [("airports", True), ("weather", False)]
    assert {"carrier", "origin"} <= set(cfg.features.request_features)  # entity keys as model inputs
    cluster = load_config(EXAMPLE / "kfloop.cluster.yaml")
    assert cluster.storage.type == "s3" and cluster.source.uri.startswith("s3://")
    assert [t.source.uri for t in cluster.features.tables] == [
        "s3://kfloop/incoming/flights/airports.csv",
        "s3://kfloop/incoming/flights/weather.csv",
    ]

    # extends replaces lists whole: the cluster's tables repeat the local ones, the same but for the files
    def without_uri(c: object) -> list[dict]:
        dumped = [t.model_dump(mode="json") for t in c.features.tables]  # type: ignore[attr-defined]
        return [{**t, "source": {**t["source"], "uri": ""}} for t in dumped]

    assert without_uri(cluster) == without_uri(cfg)


def test_a_few_flights_are_scheduled_in_the_hour_the_clock_change_skips(data: flights.FlightsData) -> None:
    assert flights.spring_forward(date(2026, 2, 1), 60) == datetime(2026, 3, 8, 2, 0)
    assert flights.spring_forward(date(2026, 4, 1), 30) is None
    assert len(data.dst_gap) == 3 and all(g.startswith("2026-03-08 02") for g in data.dst_gap)
    text = pa.array((data.flights["flight_date"] + " " + data.flights["dep_time"]).tolist())
    parsed, gap = parse_timestamps(text, pa.timestamp("us", tz="UTC"), flights.ZONE)
    assert sorted(np.asarray(text)[gap].tolist()) == sorted(data.dst_gap)
    assert parsed.null_count == 3  # every other schedule exists
    assert pd.Series(parsed.to_pandas()).dropna().is_monotonic_increasing  # the file is in time order
    assert generate(FlightsSpec(rows=500, start=date(2026, 4, 1), days=20)).dst_gap == []  # no change: no gap


def test_cancelled_flights_are_written_with_na_tokens(tmp_path: Path, data: flights.FlightsData) -> None:
    paths = flights.write(data, tmp_path)
    assert paths == {n: tmp_path / f"{n}.csv" for n in ("flights", "airports", "weather")}
    with paths["flights"].open() as fh:
        rows = list(csv.DictReader(fh))
    cancelled = [r for r in rows if r["cancelled"] == "1"]
    assert 0.005 < len(cancelled) / len(rows) < 0.05
    for r in cancelled:
        assert [r[c] for c in flights.CANCELLED_NULLS] == ["NA"] * len(flights.CANCELLED_NULLS)
    flown = [r for r in rows if r["cancelled"] == "0"]
    assert not any("NA" in r.values() or "" in r.values() for r in flown)
    assert flown[0]["dep_time"].isdigit() and len(flown[0]["dep_time"]) == 4  # "0735": local, no separator
    assert flown[0]["departed_at"][10] == "T" and "+" not in flown[0]["departed_at"]  # naive local time


def test_output_paths_a_directory_or_the_flights_file() -> None:
    assert flights.output_paths("out/f.parquet") == {
        "flights": Path("out/f.parquet"),
        "airports": Path("out/airports.parquet"),
        "weather": Path("out/weather.parquet"),
    }
    assert flights.output_paths("out")["weather"] == Path("out/weather.csv")


def test_the_tables_cover_every_airport_and_hour(data: flights.FlightsData) -> None:
    assert list(data.airports["origin"]) == list(flights.AIRPORTS)
    assert set(data.airports["region"]) == set(flights.REGIONS)
    w = data.weather
    assert len(w) == len(flights.AIRPORTS) * w["observed_at"].nunique()
    assert not w.duplicated(["origin", "observed_at"]).any()
    departures = pd.to_datetime(data.flights["departed_at"]).dt.tz_localize(flights.ZONE).dropna()
    assert w["observed_at"].min() <= departures.min() and w["observed_at"].max() >= departures.max().floor("h")
    assert 0.01 < w["thunderstorm"].mean() < 0.15


def test_the_delay_follows_what_the_features_see(data: flights.FlightsData) -> None:
    """Weather at departure (the weather table), the carrier and the hour (request features) all move the
    delay, so the example's model has something to learn from each path."""
    f = data.flights.dropna(subset=["arr_delay_min"]).copy()
    sched = pd.to_datetime(f["flight_date"] + " " + f["dep_time"], format="%Y-%m-%d %H%M")
    f["observed_at"] = sched.dt.tz_localize(flights.ZONE, nonexistent="shift_forward").dt.floor("h")
    f["observed_at"] = f["observed_at"].dt.tz_convert("UTC")
    joined = f.merge(data.weather, on=["origin", "observed_at"], how="left")
    assert joined["thunderstorm"].notna().all()
    storm = joined.groupby("thunderstorm")["arr_delay_min"].mean()
    assert storm[1] - storm[0] > 25
    by_carrier = f.groupby("carrier")["arr_delay_min"].mean()
    assert by_carrier["NK"] - by_carrier["DL"] > 12
    by_hour = f.groupby(sched.dt.hour)["arr_delay_min"].mean()
    assert by_hour[20] - by_hour[7] > 15
    assert 5 < f["arr_delay_min"].mean() < 30


def test_demo_data_cli_writes_the_flights_files(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "src" / "flights.csv"
    args = ["demo-data", "--example", "flights", "--rows", "1500", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.parent.iterdir()} == {"flights.csv", "airports.csv", "weather.csv"}
    assert len(pd.read_csv(out)) == 1500 and "3 in the hour the clock change skips" in " ".join(result.output.split())
    again = runner.invoke(app, [*args, "--skip-existing"])
    assert again.exit_code == 0 and "skipped" in again.output
    bad = runner.invoke(app, [*args, "--defects", "nulls=0.1"])
    assert bad.exit_code == 2 and "--example fraud" in bad.output
    unknown = runner.invoke(app, ["demo-data", "--example", "trains", "--rows", "10", "--out", str(tmp_path / "t.csv")])
    assert unknown.exit_code == 2 and "one of fraud, flights" in unknown.output
