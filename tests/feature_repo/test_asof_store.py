"""The as-of offline store answers exactly what Feast's own DuckDB store answers, on the edges of a point-in-time
join: TTL edges to the microsecond, events at the entity timestamp, before any event, keys without events, null
keys and values, ties on the event timestamp broken by the created timestamp, field mappings, a view projected
under another name and join key, duplicate entity rows and extra columns (labels, request features).

Feast's store is the oracle: both run on the same FeatureStore (two RepoConfigs over one registry and one set of
Parquet files), and the frames must hold the same rows (any order) with the same columns and dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.errors import FeastEntityDFMissingColumnsError
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String

from kfloop.config import load_config
from kfloop.feature_repo.asof_store import OFFLINE_STORE_TYPE, AsofDuckDBOfflineStore, AsofDuckDBOfflineStoreConfig
from kfloop.feature_repo.store import repo_settings
from tests.conftest import DEMO_CONFIG

T0 = datetime(2026, 3, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY = timedelta(days=1)
SERVICE = "edges"  # the three views as declared
PROJECTED = "projected"  # customer_stats + merchant_risk renamed dest_merchant, joined on dest_merchant_id


def _at(days: float = 0, us: int = 0) -> pd.Timestamp:
    return pd.Timestamp(T0 + timedelta(days=days) + us * US)


def _customer_events() -> pd.DataFrame:
    """customer_stats (ttl 1 d, no created timestamp): c1 has a run of events, c2 one, c3 none."""
    rows = [
        ("c1", _at(0), 10.0, 1),
        ("c1", _at(1), None, 2),  # a null feature value is a value: it wins over the older 10.0
        ("c1", _at(3), 30.0, 3),
        ("c1", _at(5), 50.0, 4),
        ("c2", _at(2), 7.5, 1),
    ]
    return pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "amount_sum", "txn_count"])


def _merchant_events() -> pd.DataFrame:
    """merchant_risk (ttl 7 d, created timestamps, source column ``risk_raw`` mapped to ``risk``): m1 has two
    rows at one event time, the later-created one must win; m2 one row; 99 has none."""
    rows = [
        (1, _at(0), _at(0), 0.1, "low"),
        (1, _at(4), _at(4), 0.4, "mid"),
        (1, _at(4), _at(6), 0.9, "high"),  # same event time, created later: the row both stores keep
        (2, _at(1), _at(1), None, None),
    ]
    return pd.DataFrame(rows, columns=["merchant_id", "event_timestamp", "created", "risk_raw", "band"])


def _country_events() -> pd.DataFrame:
    """country_flags (ttl 0: never expires), a low-cardinality key."""
    rows = [("FR", _at(-30), 1), ("DE", _at(2), 0), ("FR", _at(4), 2)]
    return pd.DataFrame(rows, columns=["country", "event_timestamp", "level"])


def entity_rows() -> pd.DataFrame:
    """Entity rows on every edge; ``row`` and ``label`` ride along (``row`` names each row for the asserts)."""
    rows = [
        # row, customer, merchant, dest merchant, country, entity time
        (0, "c1", 1, 2, "FR", _at(-1)),  # before any event of c1 and m1
        (1, "c1", 1, 2, "FR", _at(0)),  # exactly at an event
        (2, "c1", 1, 1, "DE", _at(1, us=-1)),  # 1 µs before c1's null row
        (3, "c1", 1, 1, "DE", _at(2)),  # c1's null row, exactly ttl old: still joined
        (4, "c1", 1, 1, "FR", _at(2, us=1)),  # the same row 1 µs past the ttl: expired
        (5, "c1", 1, 2, "FR", _at(4)),  # m1's tie at day 4
        (6, "c1", 1, 2, "FR", _at(11)),  # m1's day-4 row exactly 7 d old
        (7, "c1", 1, 2, "FR", _at(11, us=1)),  # m1's day-4 row 1 µs too old
        (8, "c2", 2, 1, "DE", _at(30)),  # c2 long expired; country never expires
        (9, "c3", 99, 99, "XX", _at(3)),  # keys without any event
        (10, None, 1, 1, None, _at(4)),  # null keys
        (11, "c1", 1, 2, "FR", _at(5)),  # a duplicate entity row (keys and time) ...
        (11, "c1", 1, 2, "FR", _at(5)),  # ... kept twice
        (12, "c1", 1, 2, "FR", _at(5)),  # same keys and time, other extra columns
    ]
    frame = pd.DataFrame(rows, columns=["row", "customer_id", "merchant_id", "dest_merchant_id", "country", "ts"])
    frame["event_timestamp"] = frame.pop("ts")
    frame["label"] = frame["row"] % 2
    frame["amount"] = frame["row"] * 1.5  # a request feature: passes through
    return frame


@dataclass(frozen=True)
class Stores:
    feast: FeatureStore  # Feast's own DuckDB store
    asof: FeatureStore  # the same repo through AsofDuckDBOfflineStore


def _settings(root: Path, offline_type: str) -> RepoConfig:
    return RepoConfig(
        repo_path=root,
        project="asof_edges",
        provider="local",
        registry={"registry_type": "file", "path": str(root / "registry.db"), "cache_ttl_seconds": 0},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": offline_type},
        entity_key_serialization_version=3,
    )


def _objects(root: Path) -> list:
    def source(name: str, frame: pd.DataFrame, **kwargs: object) -> FileSource:
        path = root / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        return FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp", **kwargs)

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)
    country = Entity(name="country", join_keys=["country"], value_type=ValueType.STRING)
    customers = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=DAY,
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="amount_sum", dtype=Float64),
            Field(name="txn_count", dtype=Int64),
        ],
        source=source("customer_stats", _customer_events()),
    )
    merchants = FeatureView(
        name="merchant_risk",
        entities=[merchant],
        ttl=7 * DAY,
        schema=[
            Field(name="merchant_id", dtype=Int64),
            Field(name="risk", dtype=Float64),
            Field(name="band", dtype=String),
        ],
        source=source(
            "merchant_risk", _merchant_events(), created_timestamp_column="created", field_mapping={"risk_raw": "risk"}
        ),
    )
    countries = FeatureView(
        name="country_flags",
        entities=[country],
        ttl=timedelta(0),
        schema=[Field(name="country", dtype=String), Field(name="level", dtype=Int64)],
        source=source("country_flags", _country_events()),
    )
    dest = merchants.with_name("dest_merchant").with_join_key_map({"merchant_id": "dest_merchant_id"})
    # two services: Feast cannot compare a service holding one view both plain and renamed
    service = FeatureService(name=SERVICE, features=[customers, merchants, countries])
    projected = FeatureService(name=PROJECTED, features=[customers, dest])
    return [customer, merchant, country, customers, merchants, countries, service, projected]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    root = tmp_path_factory.mktemp("asof")
    feast = FeatureStore(config=_settings(root, "duckdb"))
    feast.apply(_objects(root))
    return Stores(feast, FeatureStore(config=_settings(root, OFFLINE_STORE_TYPE)))


def _retrieve(
    store: FeatureStore, entities: pd.DataFrame, full: bool, by_created: bool = False, service_name: str = SERVICE
) -> pd.DataFrame:
    service = store.get_feature_service(service_name)
    job = store.get_historical_features(
        entity_df=entities.copy(), features=service, full_feature_names=full, filter_by_created_timestamp=by_created
    )
    return job.to_df()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), na_position="last", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("service", [SERVICE, PROJECTED])
@pytest.mark.parametrize("full", [False, True], ids=["short-names", "full-names"])
def test_same_rows_columns_and_values_as_feasts_duckdb_store(stores: Stores, full: bool, service: str) -> None:
    entities = entity_rows()
    ours = _retrieve(stores.asof, entities, full, service_name=service)
    theirs = _retrieve(stores.feast, entities, full, service_name=service)
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(_sorted(ours), _sorted(theirs))
    pd.testing.assert_frame_equal(entities, entity_rows())  # the caller's frame is left as it was


def test_the_fixture_reaches_every_edge(stores: Stores) -> None:
    """What the comparison relies on: the rows do hit each edge (else equal frames would prove little)."""
    got = _retrieve(stores.asof, entity_rows(), full=True).groupby("row")
    first = got.first()
    amount, txns = first["customer_stats__amount_sum"], first["customer_stats__txn_count"]
    risk = first["merchant_risk__risk"]
    dest_risk = (
        _retrieve(stores.asof, entity_rows(), True, service_name=PROJECTED)
        .groupby("row")
        .first()["dest_merchant__risk"]
    )
    assert pd.isna(amount[0]) and pd.isna(risk[0])  # before any event
    assert amount[1] == 10.0 and txns[1] == 1  # an event at the entity time counts
    assert amount[2] == 10.0 and txns[3] == 2 and pd.isna(amount[3])  # exactly ttl old: joined, its null kept
    assert pd.isna(txns[4])  # 1 µs past the ttl
    assert risk[5] == 0.9 and first["merchant_risk__band"][5] == "high"  # the later-created tie wins
    assert risk[6] == 0.9 and pd.isna(risk[7])  # 7 d edge of the merchant view
    assert dest_risk[3] == 0.1 and pd.isna(dest_risk[6])  # the projected view joins on its own key column
    assert first["country_flags__level"][8] == 0 and pd.isna(txns[8])  # ttl 0 never expires; 1 d does
    assert pd.isna(txns[9]) and pd.isna(risk[9]) and pd.isna(first["country_flags__level"][9])  # no events
    assert pd.isna(txns[10]) and risk[10] == 0.9  # a null key joins nothing; the other keys still do
    assert got.size()[11] == 2 and got.size()[12] == 1  # duplicate entity rows are kept


def test_created_timestamp_cutoff_is_feasts_own_answer(stores: Stores) -> None:
    entities = entity_rows()
    ours = _retrieve(stores.asof, entities, full=False, by_created=True)
    theirs = _retrieve(stores.feast, entities, full=False, by_created=True)
    pd.testing.assert_frame_equal(_sorted(ours), _sorted(theirs))


def test_an_entity_frame_without_a_join_key_names_the_missing_column(stores: Stores) -> None:
    with pytest.raises(FeastEntityDFMissingColumnsError, match="dest_merchant_id"):
        _retrieve(stores.asof, entity_rows().drop(columns="dest_merchant_id"), full=False, service_name=PROJECTED)


def test_the_join_is_one_asof_join_per_view(stores: Stores) -> None:
    """The plan itself: DuckDB's sorted-merge ASOF joins, no range join whose size grows with the TTL."""
    service = stores.asof.get_feature_service(SERVICE)
    job = stores.asof.get_historical_features(entity_df=entity_rows(), features=service)
    sql = str(job.table.compile()).upper()
    assert sql.count("ASOF LEFT JOIN") == 3
    assert sql.count(" JOIN ") == sql.count("ASOF LEFT JOIN")


def test_the_type_path_names_the_class_and_kfloop_repos_use_it(tmp_path: Path) -> None:
    """Feast resolves ``offline_store.type`` to the class and its ``...Config``; kfloop's settings name it."""
    path = f"{AsofDuckDBOfflineStore.__module__}.{AsofDuckDBOfflineStore.__name__}"
    assert path == OFFLINE_STORE_TYPE
    settings = repo_settings(load_config(DEMO_CONFIG), str(tmp_path))
    config = RepoConfig(repo_path=tmp_path, **settings)
    assert isinstance(config.offline_store, AsofDuckDBOfflineStoreConfig)
    assert isinstance(get_offline_store_from_config(config.offline_store), AsofDuckDBOfflineStore)
