"""The stream benchmark's traffic and its independent lag probe.

- :func:`event_pool`: the demo generator's transactions (a fixed population of customers and merchants), sent in
  their generated order; every process rebuilds the same pool from its :class:`PoolSpec` (seeded).
- :func:`produce` (a process of its own): XADDs the pool at a constant rate in 10 ms ticks, each event stamped
  with the wall-clock time it is sent, so lag = online write time - send time. It records every send time.
- :class:`Probe` (in the benchmark's own process): polls the online store for a few sampled entities and, when an
  entity's event count goes up to k, takes ``poll time - send time of its k-th event`` as a lag sample. It reads
  what any online client reads, so the consumers' own lag numbers are checked, not trusted; and the final counts
  must equal the events sent per entity (nothing lost, nothing counted twice).

Why counts and not the stored event time: Feast's SQLite store keeps the row's time to the second, which would
add up to a second to every SQLite sample; every run lasts less than the shortest window (1 h), so the count
feature of the longest window is exactly the entity's number of events so far on every path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import redis
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values

from kfloop.config import Config, FeatureViewSpec
from kfloop.config.contract import parse_duration
from kfloop.config.features import feature_name
from kfloop.demo import DemoSpec, generate
from kfloop.stream.sources import EVENT_FIELD

SEED = 42
#: The population every run sends events of: `kfloop demo-data`'s ratios for 120,000 rows (60 s at 2,000/s).
CUSTOMERS, MERCHANTS = 2_400, 600
TICK = 0.01  # seconds between the producer's sends
PROBE_EVERY = 0.05  # seconds between the probe's polls


@dataclass(frozen=True)
class PoolSpec:
    """The events of one run: ``events`` demo transactions of the fixed population."""

    events: int
    seed: int = SEED
    customers: int = CUSTOMERS
    merchants: int = MERCHANTS


def event_pool(spec: PoolSpec) -> pd.DataFrame:
    """The run's transactions in sending order (their generated event times are replaced when sent)."""
    demo = DemoSpec(rows=spec.events, seed=spec.seed, customers=spec.customers, merchants=spec.merchants)
    return generate(demo).frame.reset_index(drop=True)


def payload_templates(pool: pd.DataFrame, ts_column: str) -> list[bytes]:
    """Each record as JSON without its time: ``b'{"<ts>":"' + iso time + template[1:]`` is the event."""
    hour = datetime.now(UTC).hour  # hour_of_day of a live event (the contract's rule is a warning anyway)
    records = pool.drop(columns=[ts_column]).assign(hour_of_day=hour).to_dict("records")
    return [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) for r in records]


@dataclass(frozen=True)
class ProducerSpec:
    url: str  # redis:// URL of the stream's server
    key: str
    ts_column: str
    pool: PoolSpec
    rate: float
    out: str  # .npz of the send times, .json of the summary


def produce(spec: ProducerSpec, ready: Any, go: Any) -> None:
    """Process entry point: build the payloads, set ``ready``, send the pool at ``spec.rate`` events/s from
    ``go`` on."""
    templates = payload_templates(event_pool(spec.pool), spec.ts_column)
    head = b'{"' + spec.ts_column.encode() + b'":"'
    n = len(templates)
    sent_at = np.zeros(n, dtype=np.float64)
    client = redis.Redis.from_url(spec.url, socket_timeout=30)
    client.ping()
    ready.set()
    go.wait()
    t0, sent, behind = time.monotonic(), 0, 0.0
    while sent < n:
        due = min(n, int((time.monotonic() - t0) * spec.rate) + 1)
        if due > sent:
            now = time.time()
            stamp = head + datetime.fromtimestamp(now, UTC).isoformat().encode() + b'",'
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                pipe.xadd(spec.key, {EVENT_FIELD: stamp + templates[i][1:]})
            pipe.execute()
            sent_at[sent:due] = now
            behind = max(behind, time.monotonic() - t0 - sent / spec.rate)
            sent = due
        time.sleep(max(0.0, t0 + (int((time.monotonic() - t0) / TICK) + 1) * TICK - time.monotonic()))
    client.close()
    np.savez(spec.out + ".npz", sent_at=sent_at)
    span = float(sent_at[-1] - sent_at[0]) if n > 1 else 0.0
    summary = {"sent": n, "first": float(sent_at[0]), "last": float(sent_at[-1]), "behind_max_s": behind,
               "rate": (n - 1) / span if span > 0 else None}  # fmt: skip
    Path(spec.out + ".json").write_text(json.dumps(summary))


def count_feature(view: FeatureViewSpec) -> str:
    """The view's count over its longest window: the entity's number of events, in any run shorter than it."""
    best = max(
        ((parse_duration(w), feature_name(a.column, "count", w)) for a in view.aggregates if not a.label_delay
         if "count" in a.functions for w in a.windows),
        default=None,
    )  # fmt: skip
    if best is None:
        raise ValueError(f"feature view {view.name}: no count aggregate without label_delay for the probe to read")
    return best[1]


@dataclass(frozen=True)
class ProbeSample:
    view: str
    entity: str
    count: int  # the entity's event count online when seen
    seen_at: float  # wall clock of the poll that saw it


class Probe:
    """Polls the count feature of sampled entities through the online store's read interface."""

    def __init__(self, config: Config, store: FeatureStore, sampled: Mapping[str, Sequence[str]]) -> None:
        self.store, self.provider = store, store._get_provider()
        self.views = {v.name: v for v in config.features.views if v.name in sampled}
        self.features = {name: count_feature(v) for name, v in self.views.items()}
        self.sampled = {name: list(sampled[name]) for name in self.views}
        kinds = {e.join_key: e.value_type for e in store.list_entities()}
        self.keys: dict[str, list[EntityKeyProto]] = {}
        for name, view in self.views.items():
            values = python_values_to_proto_values(self.sampled[name], kinds[view.entity])
            self.keys[name] = [EntityKeyProto(join_keys=[view.entity], entity_values=[v]) for v in values]
        self.fvs = {name: store.get_feature_view(name) for name in self.views}
        self.last = {name: [0] * len(self.sampled[name]) for name in self.views}
        self.samples: list[ProbeSample] = []
        self.polls = 0

    def poll(self) -> None:
        for name, fv in self.fvs.items():
            feature = self.features[name]
            rows = self.provider.online_read(self.store.config, fv, self.keys[name], [feature])
            now = time.time()
            for j, (_, row) in enumerate(rows):
                value = row.get(feature) if row else None
                count = value.int64_val if value is not None and value.HasField("int64_val") else 0
                if count > self.last[name][j]:
                    self.samples.append(ProbeSample(name, self.sampled[name][j], count, now))
                    self.last[name][j] = count
        self.polls += 1

    def final_counts(self) -> dict[str, dict[str, int]]:
        self.poll()
        return {name: dict(zip(self.sampled[name], self.last[name], strict=True)) for name in self.views}


def sample_entities(pool: pd.DataFrame, view: FeatureViewSpec, n: int, seed: int) -> list[str]:
    """``n`` entities of ``view`` drawn at random from those with events in the pool."""
    ids = np.sort(pool[view.entity].dropna().astype(str).unique())
    return [str(e) for e in np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)]


@dataclass(frozen=True)
class ProbeResult:
    lags: dict[str, np.ndarray]  # view → seconds from the k-th event's send to the poll that saw count k
    wrong: list[str]  # entities whose final count is above the events sent for them (or below, once drained)
    polls: int


def probe_lags(
    probe: Probe, pool: pd.DataFrame, sent_at: np.ndarray, final: Mapping[str, Mapping[str, int]], drained: bool
) -> ProbeResult:
    """Each sample's lag from its event's send time; the final counts checked against the pool (equal once the
    consumer has written every event, never above it)."""
    lags: dict[str, list[float]] = {name: [] for name in probe.views}
    order: dict[tuple[str, str], np.ndarray] = {}
    for name, view in probe.views.items():
        column = pool[view.entity].astype(str).to_numpy()
        for e in probe.sampled[name]:
            order[(name, e)] = np.flatnonzero(column == e)
    for s in probe.samples:
        idx = order[(s.view, s.entity)]
        if s.count <= len(idx):
            lags[s.view].append(s.seen_at - float(sent_at[idx[s.count - 1]]))
    wrong = [
        f"{name} {e}: {got} online, {len(order[(name, e)])} sent"
        for name, counts in final.items()
        for e, got in counts.items()
        if got > len(order[(name, e)]) or (drained and got != len(order[(name, e)]))
    ]
    return ProbeResult({k: np.asarray(v) for k, v in lags.items()}, wrong, probe.polls)
