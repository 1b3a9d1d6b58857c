"""Attribute tables (``features.tables``) through the feature, materialize and training-set stages.

One aggregate view plus a snapshot table (merchant attributes, valid from the epoch, ``ttl: 0s``) and a
timestamped one (hourly-ish weather readings per customer, ``ttl: 3h``), each ingested and validated under its own
contract: the training set joins the row valid at each event (never one stamped at or after it), snapshot values
for every event, null for a key the table lacks or only has in quarantine; the online store holds each key's
current row; a re-ingested snapshot with one changed attribute reaches the offline table and the online store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.types import Bool, Float64, Int64, String

from kfloop.components.features import compute_features
from kfloop.components.ingest import ingest
from kfloop.components.training_set import service_version
from kfloop.components.validate import validate
from kfloop.config import parse_config
from kfloop.errors import SourceError
from kfloop.feature_repo.online import ServingLookup
from kfloop.feature_repo.state import load_state
from kfloop.feature_repo.status import feature_status
from kfloop.layout import clean_dataset, stale_key
from tests.feature_repo.conftest import online_backend, redis_server  # noqa: F401 (fixtures)
from tests.feature_repo.harness import NOW, Loop, OnlineBackend, plain, sqlite_backend, write_csv

MERCHANTS, WEATHER, CUSTOMERS = "merchant_profile", "customer_weather", "customer_activity"

EVENTS = [  # (transaction, customer, merchant, time (UTC), amount, is_fraud)
    ("tx-1", "c-1", "m-1", "2026-01-01T10:00:00", 10.0, 1),
    ("tx-2", "c-1", "m-2", "2026-01-01T10:30:00", 20.0, 0),
    ("tx-3", "c-2", "m-3", "2026-01-01T11:00:00", 30.0, 0),  # m-3 only in the merchant table's quarantine
    ("tx-4", "c-2", "m-4", "2026-01-01T12:00:00", 40.0, 0),  # m-4 not in the merchant table
    ("tx-6", "c-3", "m-1", "2026-01-01T12:30:00", 50.0, 0),  # c-3 has no weather reading
    ("tx-5", "c-1", "m-1", "2026-01-01T13:00:00", 60.0, 1),
]
MERCHANT_CSV = (
    "merchant_id,region,capacity,verified,risk_score\n"
    "m-1,north,10,true,0.1\n"
    "m-2,south,20,false,0.5\n"
    "m-3,north,-5,true,0.9\n"  # capacity < 0: quarantined by the table's contract
)
WEATHER_CSV = (
    "customer_id,reading_time,temperature,condition\n"
    "c-1,2026-01-01T09:00:00Z,5.0,rain\n"
    "c-1,2026-01-01T10:00:00Z,6.0,cloudy\n"  # stamped exactly at tx-1: not known just before it
    "c-1,2026-01-01T10:15:00Z,7.0,sun\n"
    "c-1,2026-01-01T10:45:00Z,8.0,sun\n"  # after tx-2: not tx-2's
    "c-2,2026-01-01T08:00:00Z,1.0,snow\n"  # 3h before tx-3 (joined), 4h before tx-4 (expired: ttl 3h)
)
#: Each event's expected attributes: (region, capacity, verified, risk_score), (temperature, condition).
EXPECTED = {
    "tx-1": (("north", 10, True, 0.1), (5.0, "rain")),
    "tx-2": (("south", 20, False, 0.5), (7.0, "sun")),
    "tx-3": (None, (1.0, "snow")),
    "tx-4": (None, None),
    "tx-6": (("north", 10, True, 0.1), None),
    "tx-5": (("north", 10, True, 0.1), (8.0, "sun")),
}
MERCHANT_FEATURES, WEATHER_FEATURES = ["region", "capacity", "verified", "risk_score"], ["temperature", "condition"]


def tables_config(data: dict, root: Path) -> None:
    """One aggregate view (customer_activity), a snapshot merchant table and a timestamped weather table."""
    data["features"]["views"] = [v for v in data["features"]["views"] if v["name"] == CUSTOMERS]
    data["features"]["tables"] = [
        {
            "name": MERCHANTS,
            "key": "merchant_id",
            "source": {
                "uri": str(root / "merchants.csv"),
                "columns": {
                    "merchant_id": "string",
                    "region": "string",
                    "capacity": "int64",
                    "verified": "bool",
                    "risk_score": "float64",
                },
            },
            "contract": {"columns": {"capacity": {"min": 0, "severity": "quarantine"}}},
        },
        {
            "name": WEATHER,
            "key": "customer_id",
            "ttl": "3h",
            "source": {
                "uri": str(root / "weather.csv"),
                "timestamp_column": "reading_time",
                "columns": {
                    "customer_id": "string",
                    "reading_time": "timestamp",
                    "temperature": "float64",
                    "condition": "string",
                },
            },
        },
    ]


def load_table(loop: Loop, name: str, csv: str, path: Path) -> str | None:
    """Ingest and validate one attribute table from ``csv``; the validate run's quarantine key."""
    path.write_text(csv)
    config = loop.config.table_config(name)
    ingest(config, loop.storage, source_uri=str(path))
    result = validate(config, loop.storage, now=NOW)
    assert result.report.gate_passed, [c.check for c in result.report.checks if not c.passed]
    return result.quarantine_key


def build(root: Path, backend: OnlineBackend | None = None) -> tuple[Loop, dict]:
    """A workspace through every stage (SQLite online store by default); (loop, what each step returned)."""
    root.mkdir(parents=True, exist_ok=True)
    loop = Loop.create(root / "ws", backend or sqlite_backend(), lambda d: tables_config(d, root))
    quarantine = load_table(loop, MERCHANTS, MERCHANT_CSV, root / "merchants.csv")
    load_table(loop, WEATHER, WEATHER_CSV, root / "weather.csv")
    updates = loop.load(write_csv(root / "events.csv", EVENTS))
    materialized = loop.materialize()
    result = loop.training_set()
    rows = pd.concat(loop.splits(result).values(), ignore_index=True)
    return loop, {"quarantine": quarantine, "updates": updates, "materialized": materialized, "rows": rows}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Loop, dict]:
    return build(tmp_path_factory.mktemp("tables"))


def training_rows(rows: pd.DataFrame) -> dict[str, dict]:
    by_key = {(r["customer_id"], r["merchant_id"], r["event_timestamp"]): r for r in rows.to_dict("records")}
    return {tx: by_key[(c, m, pd.Timestamp(t, tz="UTC"))] for tx, c, m, t, _, _ in EVENTS}


def lookup(loop: Loop, at: str) -> ServingLookup:
    clock = datetime.fromisoformat(at).replace(tzinfo=UTC)
    return ServingLookup(loop.store(), loop.config.features.service, clock=lambda: clock)


# --- Feast objects ------------------------------------------------------------------------------------------------


def test_each_table_is_a_feature_view_of_its_columns_in_the_service(built: tuple[Loop, dict]) -> None:
    loop, _ = built
    store = loop.store()
    merchants, weather = store.get_feature_view(MERCHANTS), store.get_feature_view(WEATHER)
    assert {f.name: f.dtype for f in merchants.features} == {
        "region": String,
        "capacity": Int64,
        "verified": Bool,
        "risk_score": Float64,
    }
    assert {f.name: f.dtype for f in weather.features} == {"temperature": Float64, "condition": String}
    assert merchants.entities == ["merchant"] and weather.entities == ["customer"]  # shared with customer_activity
    assert store.get_feature_view(CUSTOMERS).entities == ["customer"]
    assert not merchants.ttl and weather.ttl == pd.Timedelta("3h")
    service = store.get_feature_service(loop.config.features.service)
    assert [p.name for p in service.feature_view_projections] == [CUSTOMERS, MERCHANTS, WEATHER]
    assert loop.config.features.feature_names()[-6:] == MERCHANT_FEATURES + WEATHER_FEATURES


# --- the feature stage --------------------------------------------------------------------------------------------


def test_offline_tables_hold_one_row_per_key_and_time_sorted(built: tuple[Loop, dict]) -> None:
    loop, out = built
    merchants = loop.offline(MERCHANTS)
    assert list(merchants.columns) == ["merchant_id", "event_timestamp", *MERCHANT_FEATURES]
    assert merchants["merchant_id"].tolist() == ["m-1", "m-2"]  # m-3 quarantined
    assert (merchants["event_timestamp"] == pd.Timestamp("1970-01-01", tz="UTC")).all()
    weather = loop.offline(WEATHER)
    assert list(weather.columns) == ["customer_id", "event_timestamp", *WEATHER_FEATURES]
    assert weather["event_timestamp"].is_monotonic_increasing and len(weather) == 5
    updates = out["updates"]
    assert set(updates) == {CUSTOMERS, MERCHANTS, WEATHER}
    assert (updates[MERCHANTS].rows_added, updates[MERCHANTS].offline_rows) == (2, 2)
    assert updates[WEATHER].computed_until == "2026-01-01T10:45:00+00:00"
    assert load_state(loop.storage, MERCHANTS).computed_until == "1970-01-01T00:00:00+00:00"


def test_a_rerun_with_unchanged_tables_writes_nothing(built: tuple[Loop, dict]) -> None:
    loop, _ = built
    before = {t: loop.offline(t) for t in (MERCHANTS, WEATHER)}
    again = {u.view: u for u in compute_features(loop.config, loop.storage)}
    assert {t: (again[t].rows_added, again[t].rows_removed, again[t].rebuilt) for t in before} == {
        MERCHANTS: (0, 0, False),
        WEATHER: (0, 0, False),
    }
    for t, table in before.items():
        pd.testing.assert_frame_equal(loop.offline(t), table)
        assert not loop.storage.exists(stale_key(t))


def test_the_broken_row_is_in_the_tables_quarantine_not_joined(built: tuple[Loop, dict]) -> None:
    loop, out = built
    key = out["quarantine"]
    assert key is not None and f"/{MERCHANTS}_contract/" in f"/{key}"
    bad = pq.read_table(pa.BufferReader(loop.storage.read_bytes(key))).to_pandas()
    assert bad["merchant_id"].tolist() == ["m-3"]
    assert training_rows(out["rows"])["tx-3"]["region"] is None


def test_tables_only_works_and_neither_views_nor_tables_is_a_clear_error(built: tuple[Loop, dict]) -> None:
    loop, _ = built
    data = loop.config.model_dump(mode="json")
    data["features"]["views"] = []
    only_tables = compute_features(parse_config(data, "test"), loop.storage)
    assert [(u.view, u.rows_added) for u in only_tables] == [(MERCHANTS, 0), (WEATHER, 0)]
    extra = {**data["features"]["tables"][0], "name": "merchant_extra"}
    data["features"] |= {"naming": "full", "tables": [*data["features"]["tables"], extra]}
    with pytest.raises(SourceError, match=r"merchant_extra_clean.*ingest and validate the table first"):
        compute_features(parse_config(data, "test"), loop.storage)
    data["features"]["tables"] = []
    with pytest.raises(SourceError, match=r"features\.views is empty and so is features\.tables"):
        compute_features(parse_config(data, "test"), loop.storage)


# --- the training set: as-of join ---------------------------------------------------------------------------------


def test_each_event_gets_the_attributes_valid_at_its_time(built: tuple[Loop, dict]) -> None:
    _, out = built
    rows = training_rows(out["rows"])
    assert len(out["rows"]) == len(EVENTS)
    for tx, (merchant, weather) in EXPECTED.items():
        for names, want in ((MERCHANT_FEATURES, merchant), (WEATHER_FEATURES, weather)):
            got = tuple(plain(rows[tx][n]) for n in names)
            assert got == (want or (None,) * len(names)), tx
    # types survive the join: strings as strings (not categories or bytes), booleans as booleans
    frame = out["rows"]
    for name, kind in (("region", str), ("condition", str), ("verified", bool)):
        assert {type(plain(v)) for v in frame[name] if plain(v) is not None} == {kind}, name
    # an int64 column with nulls comes out of Feast's to_df() as float64, as the aggregate views' counts do
    assert frame["capacity"].dtype == frame["amount_count_1h"].dtype


def test_service_version_counts_tables_only_when_there_are_some(built: tuple[Loop, dict]) -> None:
    loop, _ = built
    data = loop.config.model_dump(mode="json")
    data["features"]["tables"] = []
    plain_config = parse_config(data, "test")
    data["features"]["tables"] = loop.config.model_dump(mode="json")["features"]["tables"]
    data["features"]["tables"][1]["ttl"] = "6h"
    longer = parse_config(data, "test")
    versions = {service_version(c) for c in (loop.config, plain_config, longer)}
    assert len(versions) == 3


# --- online -------------------------------------------------------------------------------------------------------


def test_the_online_store_holds_each_keys_current_row(built: tuple[Loop, dict]) -> None:
    loop, out = built
    assert out["materialized"][MERCHANTS].rows_written == 2 and out["materialized"][WEATHER].rows_written == 2
    serving = lookup(loop, "2026-01-01T13:00:00")
    got = serving.get({"customer_id": "c-1", "merchant_id": "m-2"})
    assert [got[n] for n in MERCHANT_FEATURES] == ["south", 20, False, 0.5]
    assert [got[n] for n in WEATHER_FEATURES] == [8.0, "sun"]
    expired = serving.get({"customer_id": "c-2", "merchant_id": "m-4"})  # c-2's reading is 5h old: ttl 3h
    assert [expired[n] for n in MERCHANT_FEATURES + WEATHER_FEATURES] == [None] * 6
    years_later = lookup(loop, "2036-01-01T00:00:00").get({"customer_id": "c-1", "merchant_id": "m-1"})
    assert [years_later[n] for n in MERCHANT_FEATURES] == ["north", 10, True, 0.1]  # ttl 0s: never expires
    statuses = {s.view: s for s in feature_status(loop.config, loop.storage, clean_dataset("transactions"))}
    assert set(statuses) == {CUSTOMERS, MERCHANTS, WEATHER}
    assert statuses[MERCHANTS].lag_seconds == 0.0 and statuses[WEATHER].pending_source_seconds == 0.0


def test_a_changed_snapshot_attribute_reaches_offline_and_online(
    tmp_path: Path,
    online_backend: OnlineBackend,  # noqa: F811
) -> None:
    loop, _ = build(tmp_path, online_backend)
    changed = MERCHANT_CSV.replace("m-1,north,10,", "m-1,north,15,")
    load_table(loop, MERCHANTS, changed, tmp_path / "merchants-2.csv")
    updates = {u.view: u for u in compute_features(loop.config, loop.storage)}
    assert (updates[MERCHANTS].rows_added, updates[MERCHANTS].rows_removed) == (1, 1)
    assert (updates[WEATHER].rows_added, updates[CUSTOMERS].rows_added) == (0, 0)
    offline = loop.offline(MERCHANTS).set_index("merchant_id")
    assert offline.loc["m-1", "capacity"] == 15 and offline.loc["m-2", "capacity"] == 20
    stale = pq.read_table(pa.BufferReader(loop.storage.read_bytes(stale_key(MERCHANTS)))).column("entity")
    assert stale.to_pylist() == ["m-1"]
    written = loop.materialize()
    assert written[MERCHANTS].rows_written == 1 and written[WEATHER].rows_written == 0
    serving = lookup(loop, "2026-01-01T13:00:00")
    assert serving.get({"customer_id": "c-1", "merchant_id": "m-1"})["capacity"] == 15
    assert serving.get({"customer_id": "c-1", "merchant_id": "m-2"})["capacity"] == 20
    assert loop.online([{"customer_id": "c-1", "merchant_id": "m-1"}])["capacity"] == [15]  # the Feast SDK too
    rows = training_rows(pd.concat(loop.splits(loop.training_set()).values(), ignore_index=True))
    assert rows["tx-1"]["capacity"] == 15  # a snapshot has no history: the current value for every event
