"""The stream engine against the batch engine, without servers: seeded event sequences fed in random batches,
orders and with re-deliveries give, per entity, exactly the batch stage's newest feature row, window edges (an
event exactly one window before another), equal timestamps, nulls and label-delayed values included."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from kfloop.aggregates import compute_view
from kfloop.components.materialize import latest_per_entity
from kfloop.config.contract import parse_duration
from kfloop.stream.engine import Windows
from kfloop.stream.events import event_ids
from tests.conftest import demo_config

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _events(rng: random.Random, n: int) -> pa.Table:
    """Few customers and merchants, times on a coarse grid (many exact window edges and ties)."""
    steps = [timedelta(hours=h) for h in (0, 1, 1, 2, 24, 24, 7 * 24, 30 * 24)]
    rows = {k: [] for k in ("transaction_id", "customer_id", "merchant_id", "event_timestamp", "amount", "is_fraud")}
    t = T0
    for i in range(n):
        t += rng.choice(steps) if rng.random() < 0.3 else timedelta(0)
        when = t - rng.choice([timedelta(0), timedelta(hours=1), timedelta(hours=24), timedelta(microseconds=1)])
        rows["transaction_id"].append(f"tx-{i:06d}")
        rows["customer_id"].append(f"c-{rng.randrange(4)}")
        rows["merchant_id"].append(f"m-{rng.randrange(3)}")
        rows["event_timestamp"].append(when)
        rows["amount"].append(None if rng.random() < 0.1 else round(rng.uniform(1, 500), 2))
        rows["is_fraud"].append(None if rng.random() < 0.2 else int(rng.random() < 0.3))
    config = demo_config()
    schema = pa.schema([pa.field(k, config_type) for k, config_type in _types(config).items()])
    return pa.table(rows, schema=schema)


def _types(config) -> dict:
    from kfloop.schema import arrow_schema

    full = arrow_schema(config.source)
    return {
        name: full.field(name).type
        for name in ("transaction_id", "customer_id", "merchant_id", "event_timestamp", "amount", "is_fraud")
    }


def _full(table: pa.Table, config) -> pa.Table:
    """Every source column (the rest null): the engine reads only the view's."""
    from kfloop.schema import arrow_schema

    schema = arrow_schema(config.source)
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def assert_same_row(got: dict, want: dict) -> None:
    """Equal rows; sums and means within float rounding (a prefix sum's base changes the last bits)."""
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), name


@pytest.mark.parametrize("seed", range(8))
def test_stream_updates_equal_the_batch_engine(seed: int) -> None:
    rng = random.Random(seed)
    config = demo_config()
    events = _full(_events(rng, 300), config)
    order = list(range(events.num_rows))
    if seed % 2:  # mostly in event-time order (the running windows' fast path), a few events late
        times = events.column("event_timestamp").to_pylist()
        order.sort(key=lambda i: times[i])
        for _ in range(15):
            i = rng.randrange(len(order) - 5)
            order.insert(i + rng.randint(1, 5), order.pop(i))
    else:
        rng.shuffle(order)
    order += rng.sample(order, 40)  # re-deliveries, anywhere later
    label_delay = parse_duration(config.features.label_delay)
    for view in config.features.views:
        windows = Windows(view, config)
        i = 0
        while i < len(order):
            size = rng.randint(1, 60)
            batch = events.take(pa.array(order[i : i + size]))
            windows.apply(batch, event_ids(batch, config), i)
            i += size
        entities = list(windows._states)
        stream = {}
        for key in entities:  # each entity's newest row, from its running windows
            row = windows.features(key)
            stream[row[view.entity]] = row
        restarted = Windows(view, config)  # a worker that reads the stored histories (another worker, a restart)
        for key in entities:
            restarted.load(key, b"v", windows.history(key))
            assert_same_row(restarted.features(key), windows.features(key))
        ts = config.source.timestamp_column
        batch_rows = latest_per_entity(compute_view(events, view, ts, label_delay, None, {}), view.entity).to_pylist()
        assert len(batch_rows) == len(stream)
        for want in batch_rows:
            got = stream[want[view.entity]]
            assert got["event_timestamp"] == int(want["event_timestamp"].timestamp() * 1e6)
            for name in view.feature_names():
                if isinstance(want[name], float):
                    assert got[name] == pytest.approx(want[name], rel=1e-12), (seed, view.name, name)
                else:
                    assert got[name] == want[name], (seed, view.name, name)


def test_history_is_bounded_by_the_lookback() -> None:
    config = demo_config()
    view = next(v for v in config.features.views if v.time_since_previous)
    windows = Windows(view, config)
    rows = {
        "transaction_id": [],
        "customer_id": [],
        "merchant_id": [],
        "event_timestamp": [],
        "amount": [],
        "is_fraud": [],
    }
    for day in range(60):
        rows["transaction_id"].append(f"tx-{day}")
        rows["customer_id"].append("c-1")
        rows["merchant_id"].append("m-1")
        rows["event_timestamp"].append(T0 + timedelta(days=day))
        rows["amount"].append(1.0)
        rows["is_fraud"].append(0)
    schema = pa.schema([pa.field(k, t) for k, t in _types(config).items()])
    table = _full(pa.table(rows, schema=schema), config)
    windows.apply(table, event_ids(table, config), 0)
    (key,) = windows._states
    history = windows.history(key)
    longest = max(parse_duration(w) for a in view.aggregates for w in a.windows)
    assert len(history) <= longest.days + 2  # the window's days, plus the previous event for the gap


def test_archive_takes_events_missing_a_field_or_with_an_extra_one(tmp_path) -> None:
    """A stream's events are projections onto the source columns: an archive whose events all lack a column (or
    carry an unknown field) is ingested, not refused as a breaking schema change that would block the stream."""
    import orjson

    from kfloop import lake
    from kfloop.storage.local import LocalStorage
    from kfloop.stream.archive import archive
    from kfloop.stream.events import Message

    config = demo_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    event = {
        "transaction_id": "tx-000001",
        "customer_id": "c-1",
        "merchant_id": "m-1",
        "event_timestamp": "2026-03-01T10:00:00+00:00",
        "amount": 5.0,
        "merchant_category": "grocery",
        "channel": "pos",
        "distance_from_home_km": 1.0,
        "hour_of_day": 10,
        "device": "new-field",
    }
    refused, accepted = archive(config, storage, [Message("1-0", orjson.dumps(event))], [Message("2-0", b"[1]")])
    assert (accepted.rows_written, refused.rows_quarantined) == (1, 1)
    manifest = lake.read_manifest(storage, config.source.dataset)
    (row,) = next(lake.iter_dataset(storage, manifest, 10, ["transaction_id", "is_fraud"])).to_pylist()
    assert row == {"transaction_id": "tx-000001", "is_fraud": None}
