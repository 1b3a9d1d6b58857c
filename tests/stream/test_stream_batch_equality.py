"""Stream versus batch: after a streamed sequence, every online value equals what the batch stages compute from
the same events (the newest feature row per entity of the offline table), on a real redis-server, with the
records out of order, delivered twice, late within and beyond source.allowed_lateness, and some broken."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest

from kfloop.components.features import compute_features
from kfloop.components.materialize import materialize
from kfloop.components.validate import validate
from kfloop.feature_repo.store import open_store
from kfloop.layout import quarantine_prefix, too_late_prefix
from kfloop.storage.local import LocalStorage
from kfloop.stream.sources import send_events
from kfloop.stream.worker import open_worker
from tests.feature_repo.harness import NOW, OnlineBackend, demo_frames, feature_config, redis_backend, sqlite_backend
from tests.stream.conftest import assert_online_equals_batch, online_rows, stream_edit

pytestmark = pytest.mark.usefixtures("redis_server")


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for raw in frame.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in raw.items()}
        rec["event_timestamp"] = pd.Timestamp(rec["event_timestamp"]).isoformat()
        out.append(rec)
    return out


def _shuffled(records: list[dict], rng: random.Random) -> list[dict]:
    """Out of order within a few hours, 10 % delivered twice (the second copy some records later)."""
    keyed = sorted(records, key=lambda r: r["event_timestamp"])
    jitter = [(i + rng.uniform(-40, 40), r) for i, r in enumerate(keyed)]
    out = [r for _, r in sorted(jitter, key=lambda p: p[0])]
    for i in rng.sample(range(len(out)), len(out) // 10):
        out.insert(min(len(out), i + rng.randint(1, 60)), dict(out[i]))
    return out


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_streamed_online_values_equal_batch(tmp_path: Path, redis_server, store: str) -> None:
    redis_server.flush()
    backend: OnlineBackend = sqlite_backend() if store == "sqlite" else redis_backend(redis_server)
    workspace = tmp_path / "ws"
    config = feature_config(workspace, backend, stream_edit(redis_server, allowed_lateness="2d"))
    environ = {**backend.environ, "KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0"}
    storage = LocalStorage(workspace)
    rng = random.Random(7)
    early, late = demo_frames(rows=1200, seed=5, cut_day=60)
    first = _shuffled(_records(early), rng)
    # phase 2: new events, plus late ones within the 2d lateness and beyond it (those are too late in both)
    newest = pd.Timestamp(early["event_timestamp"].max())
    back = early.sample(30, random_state=1).copy()
    back["transaction_id"] = [f"tx-9{i:05d}" for i in range(len(back))]
    back["event_timestamp"] = [newest - timedelta(hours=rng.choice([3, 20, 40, 80, 200])) for _ in range(len(back))]
    broken = [b"{not json", orjson.dumps({"transaction_id": "tx-1", "amount": "lots"}), orjson.dumps([1, 2])]
    negative = _records(late.head(3).assign(amount=-5.0, transaction_id=["tx-8001", "tx-8002", "tx-8003"]))
    second = _shuffled(_records(late) + _records(back) + negative, rng)

    send_events(config, first, environ)
    worker = open_worker(config, storage, environ)
    worker.run(until_idle=True)  # stops at the first empty read, archives and acknowledges
    send_events(config, [*second[:200], *broken, *second[200:]], environ)
    worker = open_worker(config, storage, environ)
    stats = worker.run(until_idle=True)
    assert stats.skipped["unreadable"] == 2 and stats.skipped["mistyped"] == 1
    assert stats.skipped["contract"] == 3 and stats.skipped["too_late"] > 0

    assert_online_equals_batch(config, storage, environ)  # the batch stages, on what the stream archived
    assert storage.list(too_late_prefix(config.source.dataset)), "too-late records are kept aside, with the reason"
    assert storage.list(quarantine_prefix(config.source.dataset)), "unreadable records are quarantined"


def test_batch_materialize_never_sets_a_streamed_value_back(tmp_path: Path, redis_server) -> None:
    """The SQLite store takes any write (Feast's Redis store skips older ones itself): a batch run that has not
    seen the stream's newest events yet must leave their rows online."""
    redis_server.flush()
    backend = sqlite_backend()
    workspace = tmp_path / "ws"
    config = feature_config(workspace, backend, stream_edit(redis_server))
    environ = {"KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0"}
    storage = LocalStorage(workspace)
    early, late = demo_frames(rows=600, seed=11, cut_day=60)
    send_events(config, _records(early), environ)
    open_worker(config, storage, environ).run(until_idle=True)  # archived: the batch stages see these
    worker = open_worker(config, storage, environ)
    send_events(config, _records(late), environ)
    worker.process(worker.source.read(10_000, 0.1))  # online now, not archived yet
    feast = open_store(config, storage, environ)
    view = config.features.views[0]
    streamed = online_rows(feast, view, sorted(set(late[view.entity])))
    validate(config, storage, now=NOW)
    compute_features(config, storage)
    materialize(config, storage, environ, full=True)  # rewrites every entity it knows, from older rows
    after = online_rows(open_store(config, storage, environ), view, list(streamed))
    assert after == streamed
