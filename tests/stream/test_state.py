"""The state store's delta writes on a real redis-server: after every batch the stored list is exactly the
engine's kept history (appends, trims from the front, whole rewrites after a late event), a new worker that reads
it computes the same rows, and a history stored by kfloop before 0.16 (one JSON string) is read and rewritten."""

from __future__ import annotations

import random

import orjson
import pyarrow as pa

from kfloop.stream.engine import Windows
from kfloop.stream.events import event_ids
from kfloop.stream.state import RedisHistories, history_key, version_key
from tests.conftest import demo_config
from tests.stream.conftest import redis_server  # noqa: F401  (fixture)
from tests.stream.test_engine import _events, _full, assert_same_row


def _stored(client, project: str, view: str, key: str) -> list:
    return [tuple(orjson.loads(i)) for i in client.lrange(history_key(project, view, key), 0, -1)]


def test_stored_lists_follow_the_history_and_a_new_worker_agrees(redis_server) -> None:  # noqa: F811
    redis_server.flush()
    client = redis_server.client()
    config = demo_config()
    events = _full(_events(random.Random(3), 240), config)
    times = events.column("event_timestamp").to_pylist()
    order = sorted(range(events.num_rows), key=lambda i: times[i])
    order.insert(150, order.pop(200))  # one late event: a whole rewrite
    view = next(v for v in config.features.views if v.time_since_previous)
    windows, state = Windows(view, config), RedisHistories(client, config.project)
    for start in range(0, len(order), 20):
        batch = events.take(pa.array(order[start : start + 20]))
        ids = event_ids(batch, config)

        def compute(batch=batch, ids=ids, start=start):
            return {view.name: windows.apply(batch, ids, start).changes}

        state.apply({view.name: windows.touched(batch)}, {view.name: windows}, compute)
        for key in windows.touched(batch):
            assert _stored(client, config.project, view.name, key) == windows.history(key)
    reader = Windows(view, config)  # another worker: everything is read from Redis
    keys = sorted(windows._states)
    RedisHistories(client, config.project).apply({view.name: keys}, {view.name: reader}, dict)
    for key in keys:
        assert reader.history(key) == windows.history(key)
        assert_same_row(reader.features(key), windows.features(key))


def test_a_history_stored_as_one_string_is_read_and_becomes_a_list(redis_server) -> None:  # noqa: F811
    redis_server.flush()
    client = redis_server.client()
    config = demo_config()
    events = _full(_events(random.Random(4), 30), config)
    view = next(v for v in config.features.views if v.time_since_previous)
    first, rest = events.slice(0, 20), events.slice(20)
    old = Windows(view, config)
    old.apply(first, event_ids(first, config), 0)
    for key in old._states:  # what kfloop 0.15 stored: the history as one JSON document
        client.set(history_key(config.project, view.name, key), orjson.dumps([list(r) for r in old.history(key)]))
        client.set(version_key(config.project, view.name, key), b"old")
    windows, state = Windows(view, config), RedisHistories(client, config.project)
    touched = {view.name: windows.touched(rest)}
    state.apply(
        touched, {view.name: windows}, lambda: {view.name: windows.apply(rest, event_ids(rest, config), 20).changes}
    )
    both = Windows(view, config)
    both.apply(events, event_ids(events, config), 0)
    for key in touched[view.name]:
        assert client.type(history_key(config.project, view.name, key)) == b"list"
        assert _stored(client, config.project, view.name, key) == windows.history(key) == both.history(key)
