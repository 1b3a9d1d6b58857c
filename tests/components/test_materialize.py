"""Materialize stage on real online stores (SQLite and a redis-server process, same tests): online values equal
the newest offline values, idempotent and incremental runs, unknown entities, outages and recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from kfloop.components import materialize as materialize_module
from kfloop.errors import StorageError
from kfloop.feature_repo.store import objects_for
from kfloop.layout import FEAST_DIR
from tests.conftest import free_port
from tests.feature_repo.conftest import online_backend, own_redis, redis_server  # noqa: F401 (fixtures)
from tests.feature_repo.harness import (
    CUSTOMERS,
    MERCHANTS,
    Loop,
    OnlineBackend,
    RedisServer,
    assert_online_equals_latest_offline,
    demo_frames,
    redis_backend,
    sqlite_backend,
    view_section,
)


@pytest.fixture
def loop(tmp_path: Path, online_backend: OnlineBackend) -> Loop:  # noqa: F811
    return Loop.create(tmp_path / "ws", online_backend)


def distinct(loop: Loop, frame: pd.DataFrame) -> dict[str, int]:
    return {v.name: frame[v.entity].nunique() for v in loop.config.features.views}


def assert_no_duplicates(loop: Loop, frame: pd.DataFrame) -> None:
    """The raw online store holds exactly one row per entity, and the state counts the same."""
    want = distinct(loop, frame)
    assert loop.online_entity_counts() == want
    assert {v: loop.state(v).online_entities for v in want} == want


# --- online == latest offline ------------------------------------------------------------------------------------


def test_online_values_equal_the_latest_offline_row_of_every_entity(loop: Loop) -> None:
    frame = loop.load_demo()
    written = loop.materialize()
    for view, m in written.items():
        state = loop.state(view)
        assert m.rows_written == distinct(loop, frame)[view]  # the newest row per entity, nothing else
        assert m.materialized_until == state.computed_until == state.materialized_until
        assert m.lag_seconds == 0.0
    assert_online_equals_latest_offline(loop)
    assert_no_duplicates(loop, frame)


# --- idempotent and incremental ----------------------------------------------------------------------------------


def test_rematerialization_writes_nothing_and_changes_nothing(loop: Loop) -> None:
    early = loop.load_demo("early")
    loop.materialize()
    before = assert_online_equals_latest_offline(loop)
    states = {v: loop.state(v) for v in (CUSTOMERS, MERCHANTS)}
    again = loop.materialize()
    assert {v: m.rows_written for v, m in again.items()} == {CUSTOMERS: 0, MERCHANTS: 0}
    assert loop.online_for_every_entity() == before
    assert {v: loop.state(v) for v in states} == states
    assert_no_duplicates(loop, early)


def test_incremental_materialization_writes_only_changed_entities(loop: Loop) -> None:
    early = loop.load_demo("early")
    _, late = demo_frames()
    loop.materialize()
    before = loop.online_for_every_entity()
    loop.load(late)
    written = loop.materialize()
    after = assert_online_equals_latest_offline(loop)  # the online store reflects the new data
    for v in loop.config.features.views:
        changed = set(late[v.entity])
        assert written[v.name].rows_written == len(changed), v.name
        latest = loop.latest_offline(v.name)
        cut = late["event_timestamp"].min()
        assert set(latest.index[latest["event_timestamp"] >= cut]) == changed  # entities with new events
        for key, values in after[v.name].items():
            if key not in changed:
                assert values == before[v.name][key], (v.name, key)  # untouched entities keep their values
        assert after[v.name] != before[v.name]
    assert loop.online_entity_counts() == distinct(loop, pd.concat([early, late]))


REDEFINITIONS = {
    "new_feature": lambda d: view_section(d, CUSTOMERS)["aggregates"][0]["functions"].append("max"),
    "changed_label_delay": lambda d: d["features"].update(label_delay="1d"),  # same names, new fraud rates
}


@pytest.mark.parametrize("change", sorted(REDEFINITIONS))
def test_rebuilt_view_is_rematerialized_with_its_new_values(
    loop: Loop, change: str, request: pytest.FixtureRequest
) -> None:
    early = loop.load_demo("early")
    loop.materialize()
    before = loop.online_for_every_entity()
    loop.reconfigure(REDEFINITIONS[change])
    rebuilt = {v for v, u in loop.features().items() if u.rebuilt}
    assert rebuilt == ({CUSTOMERS} if change == "new_feature" else {CUSTOMERS, MERCHANTS})
    for view in rebuilt:
        assert loop.state(view).materialized_until is None  # a rebuild resets the online watermark
    written = loop.materialize()
    for v in loop.config.features.views:
        assert written[v.name].rows_written == (early[v.entity].nunique() if v.name in rebuilt else 0)
    online = assert_online_equals_latest_offline(loop)
    if change == "new_feature":
        assert all(values["amount_max_1h"] is not None for values in online[CUSTOMERS].values())
    else:
        assert online[MERCHANTS] != before[MERCHANTS]  # the fraud rates moved with the label delay
    assert_no_duplicates(loop, early)


# --- unknown entities --------------------------------------------------------------------------------------------


def test_unknown_entity_gets_explicit_missing_values(loop: Loop) -> None:
    loop.load_demo("early")
    store = loop.store()
    store.apply(objects_for(loop.config, loop.storage).all)  # a registered repo with nothing materialized yet
    names = loop.config.features.feature_names()
    empty = loop.online([{"customer_id": "c-00001", "merchant_id": "m-0001"}], store)
    assert {f: empty[f] for f in names} == {f: [None] for f in names}

    loop.materialize()
    customer = loop.latest_offline(CUSTOMERS).index[0]
    merchant = loop.latest_offline(MERCHANTS).index[0]
    rows = [
        {"customer_id": customer, "merchant_id": "m-unknown"},
        {"customer_id": "c-unknown", "merchant_id": merchant},
        {"customer_id": "c-unknown", "merchant_id": "m-unknown"},
    ]
    got = loop.online(rows)
    assert got["customer_id"] == [customer, "c-unknown", "c-unknown"]  # request order kept
    known = loop.online_for_every_entity()
    for f in loop.spec(CUSTOMERS).feature_names():
        assert got[f] == [known[CUSTOMERS][customer][f], None, None], f
    for f in loop.spec(MERCHANTS).feature_names():
        assert got[f] == [None, known[MERCHANTS][merchant][f], None], f


# --- outages -----------------------------------------------------------------------------------------------------


class Outage:
    """Takes a real online store down and brings it back: Redis crashes (SHUTDOWN SAVE, restarted on the same
    port with its data), SQLite is write-locked by another connection (sqlite's 5 s busy timeout, then an error)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, workspace: Path) -> None:
        self.kind, self.workspace = kind, workspace
        self.redis: RedisServer | None = request.getfixturevalue("own_redis") if kind == "redis" else None
        self.backend = redis_backend(self.redis) if self.redis else sqlite_backend()
        self.lock: sqlite3.Connection | None = None

    def down(self) -> None:
        if self.redis is not None:
            self.redis.stop(save=True)
        else:
            self.lock = sqlite3.connect(self.workspace / FEAST_DIR / "online.db", isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")

    def up(self) -> None:
        if self.redis is not None:
            self.redis.start()
        elif self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_store_outage_during_materialization_then_a_later_run_completes(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(kind, request, tmp_path / "ws")
    loop = Loop.create(tmp_path / "ws", outage.backend)
    frame = loop.load_demo()
    real_write = materialize_module.write_online

    def write_then_go_down(store, view, table, entity) -> int:
        written = real_write(store, view, table, entity)
        outage.down()  # the store goes down right after the first view's write
        monkeypatch.setattr(materialize_module, "write_online", real_write)
        return written

    monkeypatch.setattr(materialize_module, "write_online", write_then_go_down)
    with pytest.raises(StorageError) as failed:
        loop.materialize()
    message = str(failed.value)
    assert f"online store ({kind})" in message and MERCHANTS in message
    assert loop.state(CUSTOMERS).materialized_until == loop.state(CUSTOMERS).computed_until
    assert loop.state(MERCHANTS).materialized_until is None  # its watermark did not move

    outage.up()
    written = loop.materialize()
    assert written[CUSTOMERS].rows_written == 0
    assert written[MERCHANTS].rows_written == frame["merchant_id"].nunique()
    assert_online_equals_latest_offline(loop)
    assert_no_duplicates(loop, frame)


def test_a_wiped_online_store_is_written_again_whole(tmp_path: Path, own_redis: RedisServer) -> None:  # noqa: F811
    """A Redis without persistence restarted empty: nothing is newer than the watermark, but the next run sees its
    probe entities gone and writes every entity again (found by the fault soak's reading of the code)."""
    loop = Loop.create(tmp_path / "ws", redis_backend(own_redis))
    frame = loop.load_demo("early")
    loop.materialize()
    own_redis.client().flushall()  # what a restart without persistence leaves
    written = loop.materialize()
    assert {v: m.rows_written for v, m in written.items()} == distinct(loop, frame)
    assert_online_equals_latest_offline(loop)
    assert {v: m.rows_written for v, m in loop.materialize().items()} == {CUSTOMERS: 0, MERCHANTS: 0}


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        "redis",
    ],
)
def test_unreachable_online_store_is_a_clear_storage_error(tmp_path: Path, kind: str) -> None:
    if kind == "redis":
        server = RedisServer(tmp_path / "redis", port=free_port())  # not started: nothing listens on the port
        backend = redis_backend(server)
    else:
        backend = sqlite_backend()
    loop = Loop.create(tmp_path / "ws", backend)
    frame = loop.load_demo()
    if kind == "sqlite":
        (tmp_path / "ws" / FEAST_DIR / "online.db").mkdir(parents=True)  # the database file cannot be opened
    with pytest.raises(StorageError, match=rf"online store \({kind}\)"):
        loop.materialize()
    assert all(loop.state(v).materialized_until is None for v in (CUSTOMERS, MERCHANTS))

    if kind == "redis":
        server.start()
    else:
        (tmp_path / "ws" / FEAST_DIR / "online.db").rmdir()
    try:
        loop.materialize()
        assert_online_equals_latest_offline(loop)
        assert_no_duplicates(loop, frame)
    finally:
        if kind == "redis":
            server.stop()
