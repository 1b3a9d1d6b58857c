"""Training-set benchmark: the point-in-time join of 1M labelled rows with 3 feature views, at TTLs of 1 and 30 days.

The views are keyed by entities of 10, 1,000 and 100,000 distinct keys (a region, a merchant, a customer;
``KFLOOP_BENCH_KEYS=10`` or ``=10,100000`` keeps only those). Like the feature stage's output, each view holds one
event per labelled row, at the row's time, so a key of a 10-key entity has rows/10 events: the case where
Feast's join blows up. Each labelled row asks for its features as of 1 µs before its event (the stage's offset).

- ours:  ``FeatureStore.get_historical_features(...).to_df()`` through kfloop's offline store
         (``kfloop.feature_repo.asof_store``: one DuckDB ``ASOF JOIN`` per view, then the TTL test per row).
- peer:  the same call through Feast's default DuckDB offline store (ibis: a range join of every entity row
         with every event of its key inside the TTL, then the newest per row).
- floor: one hand-written DuckDB query with the same ``ASOF LEFT JOIN``s and TTL tests straight on the
         Parquet files, fetched as a pandas frame: no Feast, no registry, no ibis.

Feast's join does work in proportion to the (entity row, event) pairs inside the TTL (~1 µs and ~110 bytes a
pair): at 1M rows and a 10-key view that is ~10^9 pairs at 1 d and ~3 x 10^10 at 30 d, hours and more memory than
the machine has. Its case for a TTL is therefore run only where the pairs, counted exactly beforehand, stay within
``KFLOOP_BENCH_PEER_PAIRS`` (default 3 x 10^7: ~30 s and ~3 GB); each skipped one is printed with its pair count.
``--sizes 20k,100k,1M`` shows the growth: Feast's time with rows x events per key, ours with rows.

Every run's frame is checked in the untimed teardown against the floor's (rows, per-column non-null counts and
sums), so no case is fast by answering something else.

Aims (from the issue): ours ≥ 10x Feast's default, and ours at 30 d within 2x of ours at 1 d (both in the table).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import inspect
import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from kfloop.config.features import AS_OF_OFFSET, FEATURE_TIMESTAMP
from kfloop.demo import DEFAULT_START
from kfloop.feature_repo.asof_store import OFFLINE_STORE_TYPE

ROWS = 1_000_000
SEED = 42
SPAN = timedelta(days=90)  # labelled rows' event times
TTLS = {"1d": timedelta(days=1), "30d": timedelta(days=30)}
#: The views: name → (join key, distinct keys). ``KFLOOP_BENCH_KEYS`` picks some by their key counts.
VIEWS = {
    "region_stats": ("region_id", 10),
    "merchant_stats": ("merchant_id", 1_000),
    "customer_stats": ("customer_id", 100_000),
}
KEYS_ENV = "KFLOOP_BENCH_KEYS"
PEER_PAIRS_ENV = "KFLOOP_BENCH_PEER_PAIRS"
PEER_PAIRS = 30_000_000
LABEL_TS = "label_timestamp"
SERVICE = "training"
NULL_SHARE = 0.05  # of each feature column


@dataclass(frozen=True)
class View:
    name: str
    key: str
    keys: int  # distinct keys

    @property
    def features(self) -> list[str]:
        return [f"{self.name}_amount_sum", f"{self.name}_txn_count"]


ALL_VIEWS = [View(name, key, n) for name, (key, n) in VIEWS.items()]


def selected_views() -> list[View]:
    """The views this run joins (all unless ``KFLOOP_BENCH_KEYS`` names some by their key counts)."""
    raw = os.environ.get(KEYS_ENV)
    views = ALL_VIEWS
    if not raw:
        return views
    wanted = {int(part) for part in raw.replace("_", "").split(",") if part.strip()}
    chosen = [v for v in views if v.keys in wanted]
    if not chosen or len(chosen) != len(wanted):
        raise SystemExit(f"{KEYS_ENV}={raw!r}: expected key counts among {', '.join(str(v.keys) for v in views)}")
    return chosen


def peer_pair_budget() -> int:
    raw = os.environ.get(PEER_PAIRS_ENV, str(PEER_PAIRS))
    try:
        return int(float(raw))
    except ValueError:
        raise SystemExit(f"{PEER_PAIRS_ENV}={raw!r}: expected a number of pairs, e.g. 2e8") from None


# --- data -------------------------------------------------------------------------------------------------------


def _key_column(rng: np.random.Generator, view: View, rows: int) -> np.ndarray:
    width = len(str(view.keys - 1))
    ids = np.array([f"{view.key[0]}-{i:0{width}d}" for i in range(view.keys)], dtype=object)
    return ids[rng.integers(0, view.keys, rows)]


def labelled_rows(rows: int, seed: int) -> pa.Table:
    """The labelled rows, sorted by time: one key per view, a label and a request feature (``amount``)."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, int(SPAN.total_seconds() * 1e6), rows))
    start_us = int(pd.Timestamp(DEFAULT_START).timestamp() * 1e6)
    columns: dict[str, Any] = {v.key: _key_column(rng, v, rows) for v in ALL_VIEWS}
    columns[LABEL_TS] = pa.array(start_us + offsets, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    columns["amount"] = np.round(rng.gamma(2.0, 40.0, rows), 2)
    columns["label"] = (rng.random(rows) < 0.02).astype("int64")
    return pa.table(columns)


def feature_events(labels: pa.Table, view: View, seed: int) -> pa.Table:
    """The view's offline table as the feature stage writes it: one row per labelled row, at its time."""
    rng = np.random.default_rng([seed, view.keys])
    n = labels.num_rows
    counts = rng.integers(1, 60, n)
    return pa.table(
        {
            view.key: labels.column(view.key),
            FEATURE_TIMESTAMP: labels.column(LABEL_TS),
            view.features[0]: pa.array(np.round(rng.gamma(2.0, 40.0, n) * counts, 2), mask=rng.random(n) < NULL_SHARE),
            view.features[1]: pa.array(counts, pa.int64(), mask=rng.random(n) < NULL_SHARE),
        }
    )


def _data_version() -> str:
    code = inspect.getsource(labelled_rows) + inspect.getsource(feature_events) + inspect.getsource(_key_column)
    return hashlib.sha256(code.encode()).hexdigest()[:8]


def _cached(path: Path, make: Any) -> Path:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(make(), tmp, compression="zstd")
        tmp.replace(path)
    return path


@dataclass(frozen=True)
class Data:
    labels: Path
    views: dict[str, Path]  # view name → its offline Parquet


def generate(rows: int, seed: int, data_dir: Path) -> Data:
    """Labelled rows and every view's events for (rows, seed), written once and cached (zstd)."""
    stem = data_dir / f"training_set-{rows}-{seed}-{_data_version()}"
    labels_path = _cached(Path(f"{stem}-labels.parquet"), lambda: labelled_rows(rows, seed))
    labels = pq.read_table(labels_path)
    views = {
        v.name: _cached(Path(f"{stem}-{v.name}.parquet"), lambda v=v: feature_events(labels, v, seed))
        for v in ALL_VIEWS
    }
    return Data(labels_path, views)


def entity_frame(data: Data, views: Sequence[View]) -> pd.DataFrame:
    """What the training-set stage hands Feast: keys, label time, label, request feature, and the as-of time."""
    columns = [*(v.key for v in views), LABEL_TS, "amount", "label"]
    frame = pq.read_table(data.labels, columns=columns).to_pandas()
    frame[FEATURE_TIMESTAMP] = frame[LABEL_TS] - AS_OF_OFFSET
    return frame


def join_pairs(entities: pd.DataFrame, data: Data, views: Sequence[View], ttl: timedelta) -> int:
    """(entity row, event) pairs of the same key inside the TTL, summed over the views: the rows Feast's range
    join produces before it keeps the newest per entity row (exact, by binary search on (key, time))."""
    total = 0
    ttl_us = int(ttl.total_seconds() * 1e6)
    at = entities[FEATURE_TIMESTAMP].to_numpy("datetime64[us]").astype(np.int64)
    for v in views:
        events = pq.read_table(data.views[v.name], columns=[v.key, FEATURE_TIMESTAMP]).to_pandas()
        codes, uniques = pd.factorize(events[v.key])
        stride = int(at.max() - min(at.min(), events[FEATURE_TIMESTAMP].min().value // 1000)) + ttl_us + 1
        ev = np.sort(codes * stride + events[FEATURE_TIMESTAMP].to_numpy("datetime64[us]").astype(np.int64))
        known = uniques.get_indexer(entities[v.key])
        mine = known[known >= 0] * stride + at[known >= 0]
        total += int((np.searchsorted(ev, mine, "right") - np.searchsorted(ev, mine - ttl_us, "left")).sum())
    return total


# --- Feast repos ------------------------------------------------------------------------------------------------


def _objects(data: Data, views: Sequence[View], ttl: timedelta) -> list:
    objs: list = []
    fvs = []
    for v in views:
        entity = Entity(name=v.key.removesuffix("_id"), join_keys=[v.key], value_type=ValueType.STRING)
        fv = FeatureView(
            name=v.name,
            entities=[entity],
            ttl=ttl,
            schema=[
                Field(name=v.key, dtype=String),
                Field(name=v.features[0], dtype=Float64),
                Field(name=v.features[1], dtype=Int64),
            ],
            source=FileSource(name=f"{v.name}_source", path=str(data.views[v.name]), timestamp_field=FEATURE_TIMESTAMP),
        )
        objs += [entity, fv]
        fvs.append(fv)
    return [*objs, FeatureService(name=SERVICE, features=fvs)]


def open_repo(root: Path, offline_type: str) -> FeatureStore:
    """A Feast store on the repo under ``root`` (its registry shared by both offline stores)."""
    config = RepoConfig(
        repo_path=root,
        project="bench_training_set",
        provider="local",
        registry={"registry_type": "file", "path": str(root / "registry.db"), "cache_ttl_seconds": 600},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": offline_type},
        entity_key_serialization_version=3,
    )
    return FeatureStore(config=config)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# --- the cases --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed call's output, checked in the teardown."""

    frame: pd.DataFrame | None = None


@dataclass
class Setup:
    entities: pd.DataFrame
    views: list[View]
    data: Data
    root: Path
    stores: dict[tuple[str, str], FeatureStore] = field(default_factory=dict)  # (ttl, "ours"/"peer") → store
    expected: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)  # ttl → fingerprint

    def historical(self, ttl: str, role: str, run: Run) -> None:
        store = self.stores[(ttl, role)]
        service = store.get_feature_service(SERVICE)
        with _quiet():
            run.frame = store.get_historical_features(self.entities.copy(deep=False), features=service).to_df()

    def warm_up(self) -> None:
        """One tiny call per store (untimed): imports, registry reads and DuckDB's first connection are one-time
        costs, not the join's; the first timed case would pay them alone."""
        few = self.entities.head(10)
        for store in self.stores.values():
            with _quiet():
                store.get_historical_features(few.copy(), features=store.get_feature_service(SERVICE)).to_df()
        floor_query(few, self.views, self.data, TTLS["1d"])

    def floor(self, ttl: str, run: Run) -> None:
        run.frame = floor_query(self.entities, self.views, self.data, TTLS[ttl])

    def check(self, ttl: str, run: Run) -> None:
        if run.frame is None:
            raise AssertionError("the case returned no frame")
        got, want = fingerprint(run.frame, self.views), self.expected[ttl]
        same = all(
            g[0] == w[0] and math.isclose(g[1], w[1], rel_tol=1e-9)
            for g, w in zip(got.values(), want.values(), strict=True)
        )
        if list(got) != list(want) or not same:
            raise AssertionError(f"ttl {ttl}: the joined frame differs from the floor's: {got} != {want}")


def floor_query(entities: pd.DataFrame, views: Sequence[View], data: Data, ttl: timedelta) -> pd.DataFrame:
    """The least work for the same frame: chained ASOF LEFT JOINs on the Parquet files, TTL as a CASE."""
    con = duckdb.connect()
    try:
        con.register("entities", entities)
        selects = ["e.*"]
        joins = []
        for i, v in enumerate(views):
            alias = f"v{i}"
            for f in v.features:
                selects.append(
                    f"CASE WHEN {alias}.{FEATURE_TIMESTAMP} + INTERVAL {int(ttl.total_seconds())} SECOND >= "
                    f"e.{FEATURE_TIMESTAMP} THEN {alias}.{f} END AS {f}"
                )
            joins.append(
                f"ASOF LEFT JOIN read_parquet('{data.views[v.name]}') {alias} ON e.{v.key} = {alias}.{v.key} "
                f"AND e.{FEATURE_TIMESTAMP} >= {alias}.{FEATURE_TIMESTAMP}"
            )
        return con.sql(f"SELECT {', '.join(selects)} FROM entities e {' '.join(joins)}").df()
    finally:
        con.close()


def fingerprint(frame: pd.DataFrame, views: Sequence[View]) -> dict[str, tuple[int, float]]:
    """Order-free summary: the rows, and each feature column's non-null count and sum (labels and request
    features too: a join that dropped or repeated entity rows would change them)."""
    out = {"rows": (len(frame), 0.0), "label": (len(frame), float(frame["label"].sum()))}
    out["amount"] = (len(frame), float(frame["amount"].sum()))
    for v in views:
        for f in v.features:
            col = frame[f]
            out[f] = (int(col.notna().sum()), float(col.sum()))
    return out


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Generate (cached) the labelled rows and views, register one Feast repo per TTL, count Feast's pairs."""
    import feast

    n = rows or ROWS
    views = selected_views()
    data = generate(n, seed, data_dir or ROOT / ".kfloop" / "bench" / "data")
    root = Path(tempfile.mkdtemp(prefix="kfloop-bench-training-set-"))
    setup = Setup(entity_frame(data, views), views, data, root)
    budget = peer_pair_budget()
    pairs = {name: join_pairs(setup.entities, data, views, ttl) for name, ttl in TTLS.items()}
    for name, ttl in TTLS.items():
        repo = root / name
        repo.mkdir()
        with _quiet():
            open_repo(repo, "duckdb").apply(_objects(data, views, ttl))
        setup.stores[(name, "ours")] = open_repo(repo, OFFLINE_STORE_TYPE)
        setup.stores[(name, "peer")] = open_repo(repo, "duckdb")
        setup.expected[name] = fingerprint(floor_query(setup.entities, views, data, ttl), views)
    setup.warm_up()
    atexit.register(shutil.rmtree, root, True)

    def case(role: str, ttl: str) -> Case[Run]:
        label = {"ours": "kfloop as-of store", "peer": "feast duckdb store", "floor": "duckdb ASOF JOIN sql"}[role]
        if role == "floor":
            run = lambda r, t=ttl: setup.floor(t, r)  # noqa: E731
        else:
            run = lambda r, t=ttl, o=role: setup.historical(t, o, r)  # noqa: E731
        return Case(f"{label}, ttl {ttl}", role, run, Run, lambda r, t=ttl: setup.check(t, r))  # type: ignore[arg-type]

    skipped = {name: p for name, p in pairs.items() if p > budget}
    for name, p in skipped.items():
        print(
            f"  feast duckdb store, ttl {name}: skipped at {n:,} rows ({p:,} join pairs > {PEER_PAIRS_ENV}={budget:,})",
            flush=True,
        )
    cases = [case("ours", t) for t in TTLS]
    cases += [case("peer", t) for t in TTLS if t not in skipped]
    cases += [case("floor", t) for t in TTLS]
    params: Mapping[str, Any] = {
        "seed": seed,
        "views": {v.name: {"key": v.key, "distinct_keys": v.keys} for v in views},
        "events_per_view": n,
        "span_days": SPAN.days,
        "ttls": list(TTLS),
        "feast_join_pairs": pairs,
        "peer_pair_budget": budget,
        "peer_skipped_ttls": sorted(skipped),
        "feast": feast.__version__,
        "duckdb": duckdb.__version__,
    }
    keys = ", ".join(f"{v.keys:,}" for v in views)
    return Benchmark(
        "training_set",
        f"{n:,} labelled rows x {len(views)} views ({keys} keys, {n:,} events each), ttl 1 d and 30 d",
        cases,
        rows=n,
        aims={"peer": 10.0},
        params=params,
    )
