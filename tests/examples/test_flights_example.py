"""examples/flights end to end at a small size, as `kfloop run` and `kfloop serve` run it: seeded flights
with local times across a daylight-saving change, NA tokens, derived and late-known columns, an airports
snapshot and hourly weather tables → a regression model trained, gated and promoted → one request scored
by a real `kfloop serve` from the entity keys and request features alone."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from kfloop.config import Config, config_to_json, load_config, parse_config
from kfloop.demo.flights import ZONE, FlightsData, FlightsSpec, generate, write
from kfloop.layout import decision_key, quarantine_prefix
from kfloop.pipelines.local import LocalRun, project_python_on_path, run_local
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient
from kfloop.serving.clock import AS_OF_ENV
from kfloop.storage import LocalStorage
from kfloop.training.sets import latest_training_set, load_split
from tests.conftest import REPO
from tests.serving.conftest import Server

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "flights" / "kfloop.yaml"
#: Small: 4,000 flights over 20 days around the change to daylight time on 2026-03-08.
SPEC = FlightsSpec(rows=4000, start=date(2026, 2, 26), days=20)
GAP_REASON = f"is not a valid timestamp (local time skipped by a daylight-saving change in {ZONE})"


@dataclass
class Example:
    config: Config
    run: LocalRun
    data: FlightsData
    storage: LocalStorage
    root: Path


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """The example's config with its files and workspace in a temporary directory, run once by the pipeline."""
    root = tmp_path_factory.mktemp("flights")
    data = generate(SPEC)
    paths = write(data, root / "source")
    body = load_config(EXAMPLE).model_dump(mode="json")
    body["storage"] = {"type": "local", "root": str(root / "ws")}
    body["source"]["uri"] = str(paths["flights"])
    for table in body["features"]["tables"]:
        table["source"]["uri"] = str(paths[table["name"]])
    config = parse_config(body, "examples/flights (small)")
    project_python_on_path()
    run = run_local(config, root / "ws")
    return Example(config, run, data, LocalStorage(root / "ws"), root)


def test_a_regression_model_is_trained_gated_and_promoted(example: Example) -> None:
    model, cfg = example.run.model, example.config
    assert model["task"] == "regression" and model["label"] == "arr_delay_min"
    assert {"mae", "rmse", "r2"} <= set(model["metrics"]["validation"])
    version = model["version"]
    decision = json.loads(example.storage.read_text(decision_key(cfg.training.model_name, version)))
    assert decision["promoted"], decision["reasons"]
    test = decision["candidate"]
    assert {"mae", "rmse", "r2"} <= set(test) and "roc_auc" not in test
    assert test["r2"] >= cfg.training.gate.min_r2 + 0.05  # a clear margin over the gate
    assert test["mae"] <= cfg.training.gate.max_mae
    assert ModelRegistry(example.storage, cfg.training.model_name).champion().version == version
    assert example.run.deploy["action"] == "hot-switch" and example.run.deploy["version"] == version


def test_the_clock_changes_skipped_hour_is_quarantined_with_the_reason(example: Example) -> None:
    ingest = example.run.ingest
    assert example.data.dst_gap and ingest["rows_quarantined"] == len(example.data.dst_gap)
    assert ingest["rows_written"] == SPEC.rows - len(example.data.dst_gap)
    files = sorted((example.root / "ws" / quarantine_prefix("flights")).glob("*.parquet"))
    reasons = pd.concat([pd.read_parquet(f) for f in files])["_reason"].tolist()
    expected = [f"scheduled_departure: '{g}' {GAP_REASON}" for g in example.data.dst_gap]
    assert sorted(reasons) == sorted(expected)
    quality = example.run.quality
    assert quality["gate_passed"] and quality["rows_clean"] == SPEC.rows - len(example.data.dst_gap)


def test_cancelled_flights_feed_the_features_and_are_counted_out_of_the_training_set(example: Example) -> None:
    flights = example.data.flights
    in_gap = (flights["flight_date"] + " " + flights["dep_time"]).isin(example.data.dst_gap)
    cancelled = int(flights.loc[~in_gap, "cancelled"].sum())  # NA delays: read as nulls through null_values
    assert cancelled > 10
    ts = example.run.training_set
    assert ts["unlabeled_rows_dropped"] == cancelled
    assert sum(ts["rows"].values()) == example.run.quality["rows_clean"] - cancelled
    # a cancelled flight is in its origin's history: the cancellation rate (known an hour after the schedule)
    train = load_split(example.storage, latest_training_set(example.config, example.storage), "train")
    assert (train["origin_delays__cancelled_mean_24h"] > 0).mean() > 0.2


def test_the_attribute_tables_are_joined_into_the_training_set(example: Example) -> None:
    cfg = example.config
    manifest = latest_training_set(cfg, example.storage)
    train = load_split(example.storage, manifest, "train")
    airports = example.data.airports.set_index("origin")
    for col in ("region", "runways", "hub"):
        got = train[f"airports__{col}"].tolist()
        assert got == airports.loc[train["origin"], col].tolist(), col  # the snapshot, by the flight's origin
    # the weather reading of the hour before departure (ttl 3h): every flight has one
    weather = train[[c for c in train.columns if c.startswith("weather__")]]
    readings = ("wind_kt", "visibility_miles", "precip_in", "thunderstorm")
    assert list(weather.columns) == [f"weather__{c}" for c in readings]
    assert weather.notna().all().all() and 0 < weather["weather__thunderstorm"].mean() < 0.2
    # point in time: the latest reading before each departure (features are read as of t - 1 µs)
    hour = (train["scheduled_departure"] - pd.Timedelta(microseconds=1)).dt.floor("h")
    readings = example.data.weather.set_index(["origin", "observed_at"])
    expected = readings.loc[list(zip(train["origin"], hour, strict=True)), list(readings.columns)]
    for col in readings.columns:
        assert train[f"weather__{col}"].tolist() == expected[col].tolist(), col
    assert {"airports", "weather"} <= set(example.run.tables)
    assert example.run.tables["airports"]["ingest"]["rows_written"] == len(example.data.airports)


def test_the_champion_scores_a_request_of_keys_and_request_features(example: Example) -> None:
    cfg = example.config
    path = example.root / "kfloop.json"
    path.write_text(config_to_json(cfg))
    end = datetime.combine(SPEC.end, time(), ZoneInfo(ZONE))  # the data's end: serving replays it as of then
    test = load_split(example.storage, latest_training_set(cfg, example.storage), "test")
    sent = list(dict.fromkeys([*cfg.source.entity_keys, *cfg.features.request_features]))
    row = test[sent].iloc[-1].to_dict()
    row = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
    assert set(row) == {"origin", "carrier", "dest", "distance_miles", "dep_hour", "day_of_week"}  # no attribute
    server = Server(path, env={AS_OF_ENV: (end + timedelta(minutes=1)).isoformat()}).start()
    try:
        result = ServingClient.for_config(cfg, server.url, server.grpc_target).predict([row], "v2")
    finally:
        assert server.stop() == 0
    champion = ModelRegistry(example.storage, cfg.training.model_name).champion()
    assert result["model_version"] == champion.version
    [prediction] = result["predictions"]
    assert math.isfinite(prediction["score"]) and -60 < prediction["score"] < 300  # minutes of delay
    assert not prediction["defaulted"]  # its origin's and carrier's features, and the tables', were found
