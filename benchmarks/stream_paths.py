"""The three consumers of the stream benchmark, each a process of its own reading the same stream:

- ours:  ``kfloop stream run``'s worker (:func:`kfloop.stream.worker.open_worker`, ``worker.run()``) with the
         demo config's views and the default ``stream:`` settings; the lags are the worker's own (every array it
         hands its :class:`~kfloop.feature_repo.freshness.LagRecorder`), its Prometheus histogram is kept too.
- peer:  what a Feast user writes by hand: XREADGROUP a batch, keep every view's events in an in-memory pandas
         frame, compute the same aggregates with pandas (``groupby`` over each touched entity's events inside
         each window ending at its newest event), ``FeatureStore.write_to_online_store(view, df)``, XACK. No
         contract checks, no dedupe of redelivered events, no durable state, no lake archive.
- floor: XREADGROUP + Feast's ``online_write_batch`` of pre-computed rows: every event's feature values are
         computed before the run from the known event sequence (untimed); per batch the floor only parses the
         events, takes each touched entity's newest, builds the protos and writes them: the least work that
         gets the same rows online through Feast's online store interface.

All three write one row per touched entity and view per batch, and record, per view and event, the time the
write returned and the lag from the event's time (``lag.<view>`` / ``written.<view>`` in the result .npz).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import redis
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from benchmarks.stream_load import PoolSpec, event_pool
from kfloop.config import Config, FeatureViewSpec, parse_config
from kfloop.config.contract import parse_duration
from kfloop.config.features import INTEGER_FUNCTIONS, TIME_SINCE_PREVIOUS, feature_name
from kfloop.feature_repo.freshness import LagRecorder
from kfloop.storage import LocalStorage

PATHS = ("ours", "peer", "floor")


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer process: which path, on which workspace and config (plain data: it crosses a spawn)."""

    path: str
    config: dict
    workspace: str
    environ: dict[str, str]
    pool: PoolSpec
    out: str  # result prefix: <out>.npz (lags) and <out>.json (the rest)


class Progress:
    """Events written online per view, shared with the benchmark process (it waits for the drain on it)."""

    def __init__(self, shared: Any, views: list[str]) -> None:
        self.shared, self.index = shared, {v: i for i, v in enumerate(views)}
        self.lags: dict[str, list[np.ndarray]] = {v: [] for v in views}
        self.written: dict[str, list[np.ndarray]] = {v: [] for v in views}

    def add(self, view: str, lags: np.ndarray, written_at: float) -> None:
        if len(lags):
            self.lags[view].append(np.asarray(lags, dtype=np.float64))
            self.written[view].append(np.full(len(lags), written_at))
            self.shared[self.index[view]] += len(lags)

    def save(self, out: str, extra: Mapping[str, Any]) -> None:
        arrays = {}
        for v in self.index:
            arrays[f"lag.{v}"] = np.concatenate(self.lags[v]) if self.lags[v] else np.zeros(0)
            arrays[f"written.{v}"] = np.concatenate(self.written[v]) if self.written[v] else np.zeros(0)
        np.savez(out + ".npz", **arrays)
        Path(out + ".json").write_text(json.dumps(extra, default=str))


def consume(spec: ConsumerSpec, ready: Any, stop: Any, shared: Any) -> None:
    """Process entry point: set ``ready`` once able to read, run until ``stop``, save the results."""
    config = parse_config(spec.config, "stream benchmark")
    progress = Progress(shared, [v.name for v in config.features.views])
    run = {"ours": _ours, "peer": _peer, "floor": _floor}[spec.path]
    extra = run(spec, config, progress, ready, stop)
    progress.save(spec.out, extra)


# --- ours -----------------------------------------------------------------------------------------------------


class _KeptLags(LagRecorder):
    """The worker's LagRecorder, also handing each batch's lags to the benchmark."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def add(self, view: str, lags: np.ndarray, newest_event: datetime | None, written_at: datetime) -> None:
        super().add(view, lags, newest_event, written_at)
        self.progress.add(view, lags, written_at.timestamp())


def _histogram(worker: Any) -> dict[str, list[tuple[float, float]]]:
    """view → cumulative (upper bound, count) buckets of the worker's push-lag histogram."""
    from kfloop.monitoring import metric_names as names

    out: dict[str, list[tuple[float, float]]] = {}
    for metric in worker.metrics.registry.collect():
        if metric.name != names.FEATURE_PUSH_LAG:
            continue
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                out.setdefault(s.labels["view"], []).append((float(s.labels["le"]), s.value))
    return out


def _ours(spec: ConsumerSpec, config: Config, progress: Progress, ready: Any, stop: Any) -> dict[str, Any]:
    from kfloop.stream.worker import open_worker

    worker = open_worker(config, LocalStorage(Path(spec.workspace)), spec.environ)
    worker.lags = _KeptLags(progress)
    ready.set()
    threading.Thread(target=lambda: (stop.wait(), worker.stop.set()), daemon=True).start()
    stats = worker.run()  # until stopped; then it archives what it read and acknowledges (after the measurement)
    return {"stats": asdict(stats), "histogram": _histogram(worker)}


# --- the hand-written consumers' common loop ------------------------------------------------------------------


def _consumer_loop(
    config: Config,
    environ: Mapping[str, str],
    ready: Any,
    stop: Any,
    handle: Callable[[list[bytes]], None],
) -> dict[str, Any]:
    """XREADGROUP batches (the stream section's batch size and poll), ``handle`` them, XACK."""
    from kfloop.stream.sources import EVENT_FIELD, redis_client

    stream = config.stream
    assert stream is not None
    client = redis_client(config, environ)
    key, group = stream.stream_key(config.project), stream.redis.group
    try:
        client.xgroup_create(key, group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
    block_ms = max(1, int(parse_duration(stream.poll).total_seconds() * 1000))
    ready.set()
    batches = records = 0
    while not stop.is_set():
        got = client.xreadgroup(group, "bench", {key: ">"}, count=stream.batch_size, block=block_ms)
        if not got or not got[0][1]:
            continue
        entries = got[0][1]
        handle([fields[EVENT_FIELD] for _, fields in entries])
        client.xack(key, group, *[entry_id for entry_id, _ in entries])
        batches += 1
        records += len(entries)
    client.close()
    return {"batches": batches, "records": records}


def _open(spec: ConsumerSpec, config: Config) -> Any:
    """The Feast store of the workspace, the config's objects applied (the user's ``feast apply``)."""
    from kfloop.components.materialize import apply_objects
    from kfloop.feature_repo.store import open_store

    storage = LocalStorage(Path(spec.workspace))
    store = open_store(config, storage, spec.environ)
    apply_objects(config, storage, store)
    return store


def _lags(event_times: pd.Series, written_at: float) -> np.ndarray:
    event_s = event_times.to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
    return np.maximum(written_at - event_s, 0.0)


# --- peer: pandas + FeatureStore.write_to_online_store --------------------------------------------------------


def pandas_features(events: pd.DataFrame, view: FeatureViewSpec, ts: str, label_delay: timedelta) -> pd.DataFrame:
    """A Feast user's own code for one view: each entity's feature row at its newest event in ``events``
    (windows ``(t - w, t]``; a label aggregate's window ends ``label_delay`` earlier)."""
    newest = events.groupby(view.entity, sort=False)[ts].max()
    at = events[view.entity].map(newest)
    out = pd.DataFrame({ts: newest})
    for agg in view.aggregates:
        shift = pd.Timedelta(label_delay) if agg.label_delay else pd.Timedelta(0)
        for w in agg.windows:
            end = at - shift
            inside = events[(events[ts] > end - pd.Timedelta(parse_duration(w))) & (events[ts] <= end)]
            grouped = inside.groupby(view.entity, sort=False)[agg.column]
            for fn in agg.functions:
                name = feature_name(agg.column, fn, w)
                if fn == "count":
                    out[name] = grouped.size().reindex(out.index, fill_value=0).astype("int64")
                elif fn == "count_distinct":
                    out[name] = grouped.nunique().reindex(out.index, fill_value=0).astype("int64")
                else:
                    out[name] = getattr(grouped, fn)().reindex(out.index).astype("float64")
    if view.time_since_previous:  # the gap to the previous distinct event time
        last_two = events[[view.entity, ts]].drop_duplicates().sort_values(ts).groupby(view.entity).tail(2)
        grouped = last_two.groupby(view.entity, sort=False)[ts]
        previous = grouped.min().where(grouped.size() == 2)
        out[TIME_SINCE_PREVIOUS] = (newest - previous.reindex(newest.index)).dt.total_seconds()
    return out.rename_axis(view.entity).reset_index()


def _peer(spec: ConsumerSpec, config: Config, progress: Progress, ready: Any, stop: Any) -> dict[str, Any]:
    store = _open(spec, config)
    ts = config.source.timestamp_column
    label_delay = parse_duration(config.features.label_delay)
    views = list(config.features.views)
    lookback = {
        v.name: max(parse_duration(w) + (label_delay if a.label_delay else timedelta(0)) for a in v.aggregates
                    for w in a.windows)
        for v in views
    }  # fmt: skip
    history: dict[str, pd.DataFrame] = {}

    def handle(payloads: list[bytes]) -> None:
        batch = pd.DataFrame([orjson.loads(p) for p in payloads])
        batch[ts] = pd.to_datetime(batch[ts], utc=True, format="ISO8601")
        for v in views:
            columns = list(dict.fromkeys([v.entity, ts, *(a.column for a in v.aggregates)]))
            old = history.get(v.name)
            events = batch[columns] if old is None else pd.concat([old, batch[columns]], ignore_index=True)
            events = events[events[ts] > events[ts].max() - pd.Timedelta(lookback[v.name])]
            history[v.name] = events
            touched = events[events[v.entity].isin(batch[v.entity].unique())]
            rows = pandas_features(touched, v, ts, label_delay)
            store.write_to_online_store(v.name, rows)
            written = time.time()
            progress.add(v.name, _lags(batch[ts], written), written)

    return _consumer_loop(config, spec.environ, ready, stop, handle)


# --- floor: online_write_batch of pre-computed rows -----------------------------------------------------------


def precomputed_values(pool: pd.DataFrame, view: FeatureViewSpec) -> dict[str, np.ndarray]:
    """Every feature of ``view`` at each event of the pool, as it stands online after that event in a run
    shorter than every window: counts, sums, means, extremes and distinct counts over all the entity's events
    so far; label aggregates have no known label yet (count 0, others null); the time since the previous
    event depends on send times, so it is left null."""
    g = pool.groupby(view.entity, sort=False)
    n = (g.cumcount() + 1).to_numpy(np.int64)
    out: dict[str, np.ndarray] = {}
    for agg in view.aggregates:
        for fn in agg.functions:
            if agg.label_delay:  # no label is known within the run
                values = np.zeros(len(pool), np.int64) if fn in INTEGER_FUNCTIONS else np.full(len(pool), np.nan)
            elif fn == "count":
                values = n
            elif fn == "count_distinct":
                first = ~pool.duplicated([view.entity, agg.column]) & pool[agg.column].notna()
                values = first.groupby(pool[view.entity], sort=False).cumsum().to_numpy(np.int64)
            elif fn == "mean":
                values = g[agg.column].cumsum().to_numpy(np.float64) / n
            else:
                values = getattr(g[agg.column], f"cum{fn}")().to_numpy(np.float64)
            for w in agg.windows:
                out[feature_name(agg.column, fn, w)] = values
    if view.time_since_previous:
        out[TIME_SINCE_PREVIOUS] = np.full(len(pool), np.nan)
    return out


def _value(x: Any) -> ValueProto:
    if isinstance(x, np.integer):
        return ValueProto(int64_val=int(x))
    return ValueProto() if np.isnan(x) else ValueProto(double_val=float(x))


def _floor(spec: ConsumerSpec, config: Config, progress: Progress, ready: Any, stop: Any) -> dict[str, Any]:
    store = _open(spec, config)
    provider = store._get_provider()
    pool = event_pool(spec.pool)
    index = {tx: i for i, tx in enumerate(pool["transaction_id"])}
    views = list(config.features.views)
    values = {v.name: precomputed_values(pool, v) for v in views}
    fvs = {v.name: store.get_feature_view(v.name) for v in views}
    keys: dict[str, dict[str, EntityKeyProto]] = {v.name: {} for v in views}
    ts = config.source.timestamp_column

    def key(view: FeatureViewSpec, entity: str) -> EntityKeyProto:
        got = keys[view.name].get(entity)
        if got is None:
            got = keys[view.name][entity] = EntityKeyProto(
                join_keys=[view.entity], entity_values=[ValueProto(string_val=entity)]
            )
        return got

    def handle(payloads: list[bytes]) -> None:
        records = [orjson.loads(p) for p in payloads]
        times = [datetime.fromisoformat(r[ts]) for r in records]
        event_s = np.array([t.timestamp() for t in times])
        for v in views:
            newest: dict[str, int] = {}  # entity → its newest event of the batch (position in the batch)
            for j, r in enumerate(records):
                newest[r[v.entity]] = j
            columns = values[v.name]
            rows = []
            for entity, j in newest.items():
                i = index[records[j]["transaction_id"]]
                row = {name: _value(col[i]) for name, col in columns.items()}
                rows.append((key(v, entity), row, times[j], None))
            provider.online_write_batch(store.config, fvs[v.name], rows, None)
            written = time.time()
            progress.add(v.name, np.maximum(written - event_s, 0.0), written)

    return _consumer_loop(config, spec.environ, ready, stop, handle)
