"""Test harness for the feature store stages: one workspace driven through ingest → validate →
features → materialize → training set on a real online store (SQLite file or a redis-server process).

Every helper reads what the stages wrote (offline Parquet, online store, state files) through the
same paths a Feast user would, so assertions compare real artifacts, not internal objects.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from benchmarks.redis_server import RedisServer
from kfloop import lake
from kfloop.components.features import ViewUpdate, compute_features
from kfloop.components.ingest import ingest
from kfloop.components.materialize import Materialized, materialize
from kfloop.components.training_set import TrainingSet, build_training_set
from kfloop.components.validate import ValidateResult, validate
from kfloop.config import Config, FeatureViewSpec, parse_config
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.feature_repo.state import ViewState, load_state
from kfloop.feature_repo.store import open_store
from kfloop.layout import FEAST_DIR, SPLITS, clean_dataset, feast_project, offline_key
from kfloop.storage import LocalStorage
from tests.conftest import demo_config

NOW = datetime(2026, 6, 1, tzinfo=UTC)  # "now" for validation: after every test event
CUSTOMERS, MERCHANTS = "customer_activity", "merchant_risk"  # the demo config's two feature views
US = timedelta(microseconds=1)


# --- real online stores ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineBackend:
    """One online store the suite runs against: its ``features.online_store`` section and environment."""

    name: str
    online_store: dict
    environ: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None


def sqlite_backend() -> OnlineBackend:
    return OnlineBackend("sqlite", {"type": "sqlite"})


def redis_backend(server: RedisServer) -> OnlineBackend:
    return OnlineBackend(
        "redis",
        {"type": "redis", "connection_string": "${REDIS_CONNECTION_STRING}"},
        {"REDIS_CONNECTION_STRING": server.address},
        server,
    )


# --- configs and source data ----------------------------------------------------------------------------------


def feature_config(workspace: Path, backend: OnlineBackend, edit: Callable[[dict], None] | None = None) -> Config:
    """The demo config on ``workspace`` with ``backend``'s online store; ``edit`` changes the plain dict."""
    data = demo_config(workspace).model_dump(mode="json")
    data["contract"]["min_rows"]["value"] = 1  # the hand-written fixtures are tiny
    data["features"]["online_store"] = dict(backend.online_store)
    if edit is not None:
        edit(data)
    return parse_config(data, "test")


def view_section(data: dict, name: str) -> dict:
    return next(v for v in data["features"]["views"] if v["name"] == name)


@functools.cache
def _demo(rows: int, seed: int) -> pd.DataFrame:
    return generate(DemoSpec(rows=rows, seed=seed)).frame


def demo_frames(rows: int = 1500, seed: int = 21, cut_day: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generated transactions (90 days from 2026-01-01) split at ``cut_day``: (earlier, later), fresh copies."""
    frame = _demo(rows, seed)
    cut = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=cut_day))
    return frame[frame["event_timestamp"] < cut].copy(), frame[frame["event_timestamp"] >= cut].copy()


#: Workspaces after ingest → validate → features of the demo frames, made once per session and copied by
#: Loop.load_demo for tests whose subject is a later stage (the feature stage's own tests run it each time).
_PREPARED_ROOT = Path(tempfile.mkdtemp(prefix="kfloop-feature-tests-"))
atexit.register(shutil.rmtree, _PREPARED_ROOT, True)


CSV_HEADER = (
    "transaction_id,customer_id,merchant_id,event_timestamp,amount,merchant_category,channel,"
    "distance_from_home_km,hour_of_day,is_fraud\n"
)


def write_csv(path: Path, rows: Iterable[tuple]) -> Path:
    """Rows of (id, customer, merchant, 'YYYY-MM-DDTHH:MM:SS', amount, is_fraud); the rest is fixed."""
    lines = [
        f"{tx},{cust},{merch},{when}Z,{amount},grocery,pos,1.0,{int(when[11:13])},{fraud}\n"
        for tx, cust, merch, when, amount, fraud in rows
    ]
    path.write_text(CSV_HEADER + "".join(lines))
    return path


# --- one workspace through the stages -------------------------------------------------------------------------


@dataclass
class Loop:
    """A workspace, its config and online store, with the stages as methods."""

    workspace: Path
    backend: OnlineBackend
    config: Config
    storage: LocalStorage
    sources: int = 0
    edited: bool = False

    @classmethod
    def create(cls, workspace: Path, backend: OnlineBackend, edit: Callable[[dict], None] | None = None) -> Loop:
        config = feature_config(workspace, backend, edit)
        return cls(workspace, backend, config, LocalStorage(workspace), edited=edit is not None)

    def reconfigure(self, edit: Callable[[dict], None]) -> None:
        """Same workspace and store, changed config (e.g. a changed feature view definition)."""
        self.config = feature_config(self.workspace, self.backend, edit)
        self.edited = True

    # stages
    def ingest(self, source: pd.DataFrame | Path) -> None:
        if isinstance(source, pd.DataFrame):
            self.sources += 1
            path = self.workspace.parent / f"{self.workspace.name}-source-{self.sources}.parquet"
            write_frame(source, path, "parquet")
            source = path
        ingest(self.config, self.storage, source_uri=str(source))

    def validate(self) -> ValidateResult:
        result = validate(self.config, self.storage, now=NOW)
        assert result.report.gate_passed, [c.check for c in result.report.checks if not c.passed]
        return result

    def features(self) -> dict[str, ViewUpdate]:
        return {u.view: u for u in compute_features(self.config, self.storage)}

    def materialize(self, store: FeatureStore | None = None) -> dict[str, Materialized]:
        return {m.view: m for m in materialize(self.config, self.storage, self.backend.environ, store)}

    def training_set(self) -> TrainingSet:
        return build_training_set(self.config, self.storage, self.backend.environ)

    def load(self, source: pd.DataFrame | Path) -> dict[str, ViewUpdate]:
        """ingest → validate → features."""
        self.ingest(source)
        self.validate()
        return self.features()

    def load_demo(self, part: str = "all") -> pd.DataFrame:
        """ingest → validate → features of the demo frames (``early`` or ``all``) into this fresh workspace:
        computed by the first test that asks, copied for the rest. Returns the frame loaded."""
        early, late = demo_frames()
        frame = {"early": early, "all": pd.concat([early, late], ignore_index=True)}[part]
        assert not self.edited and not self.workspace.exists(), "load_demo needs a fresh workspace, demo config"
        prepared = _PREPARED_ROOT / part
        if prepared.exists():
            shutil.copytree(prepared, self.workspace)
        else:
            self.load(frame)
            shutil.copytree(self.workspace, prepared.with_suffix(".tmp"))
            prepared.with_suffix(".tmp").rename(prepared)
        return frame

    # reading what the stages wrote
    def store(self) -> FeatureStore:
        return open_store(self.config, self.storage, self.backend.environ)

    def spec(self, view: str) -> FeatureViewSpec:
        return next(v for v in self.config.features.views if v.name == view)

    def state(self, view: str) -> ViewState:
        return load_state(self.storage, view)

    def offline(self, view: str) -> pd.DataFrame:
        """The view's Feast offline source table, exactly as stored."""
        return pq.read_table(pa.BufferReader(self.storage.read_bytes(offline_key(view)))).to_pandas()

    def latest_offline(self, view: str) -> pd.DataFrame:
        """The newest offline row of each entity, indexed by entity."""
        entity = self.spec(view).entity
        table = self.offline(view).sort_values("event_timestamp", kind="stable")
        return table.groupby(entity).tail(1).set_index(entity).sort_index()

    def clean(self) -> pd.DataFrame:
        manifest = lake.read_manifest(self.storage, clean_dataset(self.config.source.dataset))
        assert manifest is not None
        tables = [pq.read_table(pa.BufferReader(self.storage.read_bytes(f.key))) for f in manifest.files]
        return pa.concat_tables(tables).to_pandas()

    def splits(self, result: TrainingSet) -> dict[str, pd.DataFrame]:
        return {name: pd.read_parquet(f"{result.prefix}/{name}.parquet") for name in SPLITS}

    def manifest(self, result: TrainingSet) -> dict:
        return json.loads(Path(f"{result.prefix}/manifest.json").read_text())

    def online(self, entity_rows: list[dict], store: FeatureStore | None = None) -> dict[str, list]:
        """``get_online_features`` through the feature service, as a Feast user calls it."""
        store = store or self.store()
        service = store.get_feature_service(self.config.features.service)
        return store.get_online_features(features=service, entity_rows=entity_rows).to_dict()

    def online_for_every_entity(self) -> dict[str, dict[str, dict]]:
        """view → entity → {feature: online value}, every offline entity asked for in one call."""
        keys = {v.name: list(self.latest_offline(v.name).index) for v in self.config.features.views}
        n = max(len(k) for k in keys.values())
        specs = self.config.features.views
        rows = [{v.entity: keys[v.name][i % len(keys[v.name])] for v in specs} for i in range(n)]
        got = self.online(rows)
        out: dict[str, dict[str, dict]] = {v.name: {} for v in specs}
        for i, row in enumerate(rows):
            for v in specs:
                out[v.name][row[v.entity]] = {f: got[f][i] for f in v.feature_names()}
        return out

    def online_entity_counts(self) -> dict[str, int]:
        """view → entities stored for it, read from the raw online store (Redis: hashes carrying the
        view's ``_ts:<view>`` field; SQLite: distinct entity keys, with exactly one row per feature each)."""
        out = {}
        if self.backend.redis is not None:
            client = self.backend.redis.client()
            hashes = [set(client.hkeys(k)) for k in client.scan_iter(count=1000)]
            for v in self.config.features.views:
                out[v.name] = sum(f"_ts:{v.name}".encode() in h for h in hashes)
            return out
        with sqlite3.connect(self.workspace / FEAST_DIR / "online.db") as conn:
            for v in self.config.features.views:
                table = f"{feast_project(self.config)}_{v.name}"
                entities, rows = conn.execute(f"SELECT COUNT(DISTINCT entity_key), COUNT(*) FROM {table}").fetchone()
                assert rows == entities * len(v.feature_names()), (v.name, entities, rows)
                out[v.name] = entities
        return out


# --- comparisons ----------------------------------------------------------------------------------------------


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def plain(value: object) -> object:
    """A pandas/numpy cell as a plain Python value (missing → None)."""
    if is_missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def assert_online_equals_latest_offline(loop: Loop) -> dict[str, dict[str, dict]]:
    """For every entity of every view: online values == the newest offline row, value for value."""
    online = loop.online_for_every_entity()
    for v in loop.config.features.views:
        latest = loop.latest_offline(v.name)
        assert sorted(online[v.name]) == list(latest.index)
        for key, values in online[v.name].items():
            want = {f: plain(latest.at[key, f]) for f in v.feature_names()}
            diff = {f: (values[f], want[f]) for f in want if values[f] != want[f]}
            assert values == want, (v.name, key, diff)
    return online


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def assert_values(actual: dict, expected: dict | None, names: list[str], where: str) -> None:
    """``actual[f]`` equals ``expected[f]`` for every feature (floats to 1e-9); ``expected`` None: all missing."""
    for f in names:
        got = plain(actual[f])
        want = None if expected is None else expected[f]
        if want is None:
            assert got is None, f"{where}: {f} = {got!r}, expected missing"
        else:
            assert got is not None and got == pytest.approx(want, rel=1e-9, abs=1e-9), (
                f"{where}: {f} = {got!r} != {want!r}"
            )


# --- the hand-checkable fixture -------------------------------------------------------------------------------
# Two customers, two merchants, one fraud label (tx-1). Demo config: customer_activity (ttl 30d) counts/sums/means
# amount over 1h/24h/7d, distinct merchants over 24h and seconds since the previous transaction; merchant_risk
# (ttl 60d) counts/sums amount over 30d and averages is_fraud over 30d ending label_delay (7d) before the row.

HAND_VIEWS = {  # what the hand-computed values below assume of the demo config's features section
    CUSTOMERS: ("customer_id", "30d", ["amount_count_1h", "amount_count_24h", "amount_count_7d", "amount_sum_1h",
                "amount_sum_24h", "amount_sum_7d", "amount_mean_1h", "amount_mean_24h", "amount_mean_7d",
                "merchant_id_count_distinct_24h", "seconds_since_previous"]),
    MERCHANTS: ("merchant_id", "60d", ["amount_count_30d", "amount_sum_30d", "is_fraud_mean_30d"]),
}  # fmt: skip


def assert_hand_assumptions(config: Config) -> None:
    """The demo config still declares what the hand-computed expectations were worked out for."""
    views = {v.name: (v.entity, v.ttl, v.feature_names()) for v in config.features.views}
    assert views == HAND_VIEWS and config.features.label_delay == "7d", "demo features changed: redo the hand values"


HAND_ROWS = [  # (transaction, customer, merchant, time (UTC), amount, is_fraud)
    ("tx-1", "c-1", "m-1", "2026-01-01T10:00:00", 10.0, 1),
    ("tx-2", "c-1", "m-2", "2026-01-01T10:30:00", 20.0, 0),
    ("tx-3", "c-1", "m-1", "2026-01-01T12:00:00", 40.0, 0),
    ("tx-6", "c-2", "m-2", "2026-01-02T09:00:00", 5.0, 0),
    ("tx-4", "c-1", "m-1", "2026-01-03T12:00:00", 80.0, 0),
    ("tx-5", "c-1", "m-1", "2026-01-08T09:00:00", 160.0, 0),  # fraud of tx-1 + 6d 23h: label not known yet
    ("tx-7", "c-2", "m-1", "2026-01-08T11:00:00", 7.0, 0),  # fraud of tx-1 + 7d 1h: label known
    ("tx-8", "c-2", "m-1", "2026-02-15T09:00:00", 9.0, 0),  # c-2's previous transaction is 37d 22h old (> ttl 30d)
]
HAND_TIME = {tx: pd.Timestamp(when, tz="UTC") for tx, _, _, when, _, _ in HAND_ROWS}
HAND_CUSTOMER = {tx: cust for tx, cust, *_ in HAND_ROWS}


def _customer(c1h: int, s1h: float, c24h: int, s24h: float, c7d: int, s7d: float, merchants: int, since) -> dict:
    return {
        "amount_count_1h": c1h, "amount_count_24h": c24h, "amount_count_7d": c7d,
        "amount_sum_1h": s1h, "amount_sum_24h": s24h, "amount_sum_7d": s7d,
        "amount_mean_1h": s1h / c1h, "amount_mean_24h": s24h / c24h, "amount_mean_7d": s7d / c7d,
        "merchant_id_count_distinct_24h": merchants, "seconds_since_previous": since,
    }  # fmt: skip


def _merchant(count: int, total: float, fraud_rate: float | None) -> dict:
    return {"amount_count_30d": count, "amount_sum_30d": total, "is_fraud_mean_30d": fraud_rate}


#: The customer_activity row computed at each transaction: windows (t - w, t] include the row itself.
HAND_CUSTOMER_ROWS = {
    "tx-1": _customer(1, 10, 1, 10, 1, 10, 1, None),  # c-1's first transaction
    "tx-2": _customer(2, 30, 2, 30, 2, 30, 2, 1800.0),  # 10:00 is inside (09:30, 10:30]
    "tx-3": _customer(1, 40, 3, 70, 3, 70, 2, 5400.0),  # 1h: only itself; 24h/7d: tx-1..3
    "tx-4": _customer(1, 80, 1, 80, 4, 150, 1, 2 * 86400.0),  # 24h: only itself; 7d: tx-1..4
    "tx-5": _customer(1, 160, 1, 160, 5, 310, 1, (4 * 24 + 21) * 3600.0),  # 7d (01-01 09:00, 01-08 09:00]: tx-1..5
    "tx-6": _customer(1, 5, 1, 5, 1, 5, 1, None),  # c-2's first transaction
    "tx-7": _customer(1, 7, 1, 7, 2, 12, 1, (6 * 24 + 2) * 3600.0),  # 7d: tx-6 and itself
    "tx-8": _customer(1, 9, 1, 9, 1, 9, 1, (37 * 24 + 22) * 3600.0),
}
#: The merchant_risk row computed at each transaction: fraud rate over (t - 7d - 30d, t - 7d].
HAND_MERCHANT_ROWS = {
    "tx-1": _merchant(1, 10, None),
    "tx-3": _merchant(2, 50, None),
    "tx-4": _merchant(3, 130, None),
    "tx-5": _merchant(4, 290, None),  # label window ends 01-01 09:00, before the fraud at 10:00
    "tx-7": _merchant(5, 297, 1.0),  # label window ends 01-01 11:00: tx-1 (fraud) is the only labelled row
    "tx-8": _merchant(1, 9, None),  # 30d: only itself; label window (01-09 09:00, 02-08 09:00]: no m-1 rows
    "tx-2": _merchant(1, 20, None),
    "tx-6": _merchant(2, 25, None),
}
#: Each training row's features are the rows as of just before its event: (customer row, merchant row).
HAND_TRAINING = {
    "tx-1": (None, None),  # first transaction of c-1 and of m-1: nothing before it
    "tx-2": ("tx-1", None),  # its own transaction not included: tx-1 only; m-2 has no earlier row
    "tx-3": ("tx-2", "tx-1"),
    "tx-6": (None, "tx-2"),
    "tx-4": ("tx-3", "tx-3"),  # tx-3 is 2 days old, within the 30d ttl
    "tx-5": ("tx-4", "tx-4"),
    "tx-7": ("tx-6", "tx-5"),  # m-1 as of tx-5: the fraud label was not known then
    "tx-8": (None, "tx-7"),  # ttl: c-2's row tx-7 is 37d 22h old (> 30d) → null; m-1 row 37d 22h old (< 60d)
}
