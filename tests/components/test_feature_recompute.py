"""Features follow the clean data: a contract change, a backfill or a re-validation that changes clean rows up to
a view's watermark recomputes the view from the earliest changed event (offline rows and online values equal a fresh
full build, entities without clean rows leave the online store), while appended rows stay incremental; overlapping
runs on a view are serialized by its lease."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from kfloop.components import features as features_module
from kfloop.components.validate import validate
from kfloop.errors import LeaseBusyError
from kfloop.feature_repo import state as state_module
from kfloop.lake_commit import CommitPolicy
from kfloop.layout import offline_key, stale_key, state_key
from kfloop.layout import view_lease_key as lease_key
from kfloop.storage.lease import lease
from tests.components.test_features import assert_tables_match
from tests.feature_repo.conftest import online_backend, redis_server  # noqa: F401 (fixtures)
from tests.feature_repo.harness import (
    CUSTOMERS,
    MERCHANTS,
    NOW,
    Loop,
    OnlineBackend,
    assert_online_equals_latest_offline,
    demo_frames,
    is_missing,
    sqlite_backend,
)

GONE_CUSTOMER, GONE_MERCHANT = "c-00001", "m-0004"  # every clean row of these disappears under the new contract
AMOUNT_MAX = 1000  # the new contract's bound: a few large amounts (the first on 2026-01-04) are quarantined
BACKFILL_DAY = "2026-02-10"


def tighten(data: dict) -> None:
    """The contract change: a tighter amount range, and a rule retiring one customer and one merchant."""
    data["contract"]["columns"]["amount"]["max"] = AMOUNT_MAX
    expr = f'customer_id != "{GONE_CUSTOMER}" and merchant_id != "{GONE_MERCHANT}"'
    data["contract"]["rules"].append({"name": "retired_accounts", "expr": expr, "severity": "quarantine"})


def hold_back_one_day(data: dict) -> None:
    """A contract quarantining one day's rows (they will come back later: a backfill of older rows)."""
    expr = f"event_timestamp.dt.dayofyear != {pd.Timestamp(BACKFILL_DAY).dayofyear}"
    data["contract"]["rules"].append({"name": "late_delivery", "expr": expr, "severity": "quarantine"})


def quarantined_by_tighten(frame: pd.DataFrame) -> pd.DataFrame:
    gone = (frame["amount"] > AMOUNT_MAX) | (frame["customer_id"] == GONE_CUSTOMER)
    return frame[gone | (frame["merchant_id"] == GONE_MERCHANT)]


def fresh_build(tmp_path: Path, frame: pd.DataFrame, edit=None) -> Loop:
    """A new workspace computing and materializing ``frame`` in one go (SQLite online store)."""
    fresh = Loop.create(tmp_path / "fresh", sqlite_backend(), edit=edit)
    fresh.load(frame)
    fresh.materialize()
    return fresh


def online_rows(customers: list[str], merchants: list[str]) -> list[dict]:
    n = max(len(customers), len(merchants))
    return [
        {"customer_id": customers[i % len(customers)], "merchant_id": merchants[i % len(merchants)]} for i in range(n)
    ]


def assert_same_online(got: dict[str, list], want: dict[str, list], names: list[str]) -> None:
    """Online answers of two stores, feature by feature (floats to 1e-9: prefix sums over different history)."""
    for name in names:
        for i, (a, b) in enumerate(zip(got[name], want[name], strict=True)):
            if is_missing(b):
                assert is_missing(a), (name, i, a)
            else:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (name, i, a, b)


# --- a contract change quarantines rows that were clean ----------------------------------------------------------


def test_contract_change_removes_rows_offline_and_online(
    tmp_path: Path,
    online_backend: OnlineBackend,  # noqa: F811
) -> None:
    loop = Loop.create(tmp_path / "ws", online_backend)
    frame = loop.load_demo()
    loop.materialize()
    before = {v: loop.offline(v) for v in (CUSTOMERS, MERCHANTS)}
    gone = quarantined_by_tighten(frame)
    days = frame["event_timestamp"].dt.strftime("%Y-%m-%d")
    first_day = days[gone.index].min()  # the earliest day that loses rows: recomputed from its first event on
    first_change = frame["event_timestamp"][days == first_day].min()

    loop.reconfigure(tighten)
    loop.validate()
    updates = loop.features()
    clean = loop.clean()
    assert len(clean) == len(frame) - len(gone)
    fresh = fresh_build(tmp_path, frame, tighten)
    for view, update in updates.items():
        assert not update.rebuilt and update.recomputed_from == first_change.isoformat(), view
        assert update.changed_dates and update.changed_dates[0] == first_day
        table = loop.offline(view)
        assert len(table) == len(clean) == update.offline_rows  # one row per clean event, the stale ones gone
        assert_tables_match(table, fresh.offline(view))  # what a from-scratch computation gives
        unchanged = before[view][before[view]["event_timestamp"] < first_change]
        assert_tables_match(table[table["event_timestamp"] < first_change], unchanged)  # kept, not recomputed
        assert update.rows_removed == (before[view]["event_timestamp"] >= first_change).sum()
        assert update.rows_added == (table["event_timestamp"] >= first_change).sum()
        assert loop.storage.exists(stale_key(view))
        assert loop.state(view).materialized_until < first_change.isoformat()  # the online store is behind again

    written = loop.materialize()
    assert {v: m.rows_deleted for v, m in written.items()} == {CUSTOMERS: 1, MERCHANTS: 1}
    assert not any(loop.storage.exists(stale_key(v)) for v in written)
    assert_online_equals_latest_offline(loop)
    assert loop.online_entity_counts() == {CUSTOMERS: clean["customer_id"].nunique(), MERCHANTS: 10 - 1}
    # every entity that ever was online answers as the fresh build does; the retired ones with nothing at all
    rows = online_rows(sorted(frame["customer_id"].unique()), sorted(frame["merchant_id"].unique()))
    names = loop.config.features.feature_names()
    got, want = loop.online(rows), fresh.online(rows)
    assert_same_online(got, want, names)
    retired = [i for i, r in enumerate(rows) if r["customer_id"] == GONE_CUSTOMER]
    assert retired and all(is_missing(got[f][i]) for f in loop.spec(CUSTOMERS).feature_names() for i in retired)
    # and the next runs have nothing left to do
    assert all((u.rows_added, u.rows_removed, u.rehashed_dates) == (0, 0, 0) for u in loop.features().values())
    assert all((m.rows_written, m.rows_deleted) == (0, 0) for m in loop.materialize().values())


# --- a backfill of older rows -------------------------------------------------------------------------------------


def test_backfilled_older_rows_recompute_from_their_date(tmp_path: Path) -> None:
    """Rows of an older day join the clean dataset (held back by the contract, then released): the view is
    recomputed from that day's first event, not rebuilt, and equals a fresh build of all the rows."""
    early, late = demo_frames()
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), edit=hold_back_one_day)
    loop.load(early)
    loop.materialize()
    before = {v: loop.offline(v) for v in (CUSTOMERS, MERCHANTS)}
    day = early[early["event_timestamp"].dt.strftime("%Y-%m-%d") == BACKFILL_DAY]
    start = day["event_timestamp"].min()
    assert len(day) and all(len(t) == len(early) - len(day) for t in before.values())

    loop.reconfigure(lambda d: None)  # the contract without the rule: the day's rows are clean now
    loop.validate()
    updates = loop.features()
    fresh = fresh_build(tmp_path, early)
    for view, update in updates.items():
        assert (update.rebuilt, update.recomputed_from, update.changed_dates) == (
            False,
            start.isoformat(),
            [BACKFILL_DAY],
        )
        table = loop.offline(view)
        assert len(table) == len(early)
        assert_tables_match(table, fresh.offline(view))
        kept = before[view][before[view]["event_timestamp"] < start]
        assert_tables_match(table[table["event_timestamp"] < start], kept)
        assert update.rows_added == (early["event_timestamp"] >= start).sum()
    loop.materialize()
    assert_online_equals_latest_offline(loop)
    rows = online_rows(sorted(early["customer_id"].unique()), sorted(early["merchant_id"].unique()))
    assert_same_online(loop.online(rows), fresh.online(rows), loop.config.features.feature_names())

    # newer rows afterwards: incremental again
    for view, update in loop.load(late).items():
        assert (update.rebuilt, update.recomputed_from, update.rows_removed) == (False, None, 0), view
        assert update.rows_added == len(late)


# --- appended rows stay cheap -------------------------------------------------------------------------------------


def test_appended_rows_take_the_incremental_path(tmp_path: Path) -> None:
    """Validation rewrites the whole clean dataset (new files), yet rows appended after the watermark, even into the
    watermark's own day, are no change: nothing is recomputed, only that one day is read to compare content."""
    early, late = demo_frames()
    frame = pd.concat([early, late])
    cut = pd.Timestamp("2026-02-20T12:00:00Z")
    first, second = frame[frame["event_timestamp"] < cut], frame[frame["event_timestamp"] >= cut]
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    loop.load(first)
    for view, update in loop.load(second).items():
        assert (update.rebuilt, update.recomputed_from, update.changed_dates, update.rows_removed) == (
            False,
            None,
            [],
            0,
        ), view
        assert update.rows_added == len(second)
        assert update.rehashed_dates == 1  # 2026-02-20 got rows after the watermark: read, found unchanged
        assert update.offline_rows == len(frame)
    state = loop.state(CUSTOMERS)
    assert sorted(state.partitions) == sorted(frame["event_timestamp"].dt.strftime("%Y-%m-%d").unique())
    assert sum(p.rows for p in state.partitions.values()) == len(frame)
    again = loop.features()
    assert all((u.rows_added, u.rows_removed, u.rehashed_dates) == (0, 0, 0) for u in again.values())


def test_a_state_without_fingerprints_rebuilds_once(tmp_path: Path) -> None:
    early, _ = demo_frames()
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    loop.load(early)
    path = tmp_path / "ws" / state_key(CUSTOMERS)
    body = json.loads(path.read_text())
    del body["partitions"]  # as written before fingerprints existed
    path.write_text(json.dumps(body))
    updates = loop.features()
    assert updates[CUSTOMERS].rebuilt and not updates[MERCHANTS].rebuilt
    assert loop.state(CUSTOMERS).partitions and loop.state(CUSTOMERS).materialized_until is None
    assert not any(u.rebuilt for u in loop.features().values())


# --- overlapping runs ----------------------------------------------------------------------------------------------


def test_a_run_waits_for_the_view_lease_and_changes_nothing_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    loop.load_demo("early")
    loop.reconfigure(tighten)
    loop.validate()
    monkeypatch.setattr(state_module, "LEASE_TIMEOUT_S", 0.3)
    table, state = (tmp_path / "ws" / offline_key(CUSTOMERS)).read_bytes(), loop.state(CUSTOMERS)
    with lease(loop.storage, lease_key(CUSTOMERS), name="another run", owner="run-b"):
        with pytest.raises(LeaseBusyError, match=rf"feature view {CUSTOMERS} is busy: held by run run-b"):
            loop.features()
        with pytest.raises(LeaseBusyError, match=rf"feature view {CUSTOMERS} is busy"):
            loop.materialize()
    assert (tmp_path / "ws" / offline_key(CUSTOMERS)).read_bytes() == table and loop.state(CUSTOMERS) == state
    assert loop.features()[CUSTOMERS].recomputed_from is not None  # free again: the change is picked up


def test_overlapping_feature_runs_are_serialized_per_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    frame = loop.load_demo()
    loop.reconfigure(tighten)
    loop.validate()
    inside: dict[str, int] = {}
    overlaps: list[str] = []
    real = features_module._update_view

    def slow_update(storage, manifest, config, view, held):
        inside[view.name] = inside.get(view.name, 0) + 1
        if inside[view.name] > 1:
            overlaps.append(view.name)
        time.sleep(0.2)  # read state … write table … save state takes a while
        try:
            return real(storage, manifest, config, view, held)
        finally:
            inside[view.name] -= 1

    monkeypatch.setattr(features_module, "_update_view", slow_update)
    results: list[dict] = []
    runs = [threading.Thread(target=lambda: results.append(loop.features())) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    assert len(results) == 3 and not overlaps
    # one run recomputed, the others found nothing to do; table and state agree with a fresh build
    for view in (CUSTOMERS, MERCHANTS):
        assert sorted(bool(r[view].rows_removed) for r in results) == [False, False, True], view
        assert (
            loop.state(view).offline_rows == len(loop.offline(view)) == len(frame) - len(quarantined_by_tighten(frame))
        )
    fresh = Loop.create(tmp_path / "fresh", sqlite_backend(), edit=tighten)
    fresh.load(frame)
    for view in (CUSTOMERS, MERCHANTS):
        assert_tables_match(loop.offline(view), fresh.offline(view))


# --- every record quarantined; clean files deleted under a read ----------------------------------------------------


def quarantine_everything(data: dict) -> None:
    """A contract under which no record is clean, and a gate that lets an empty clean dataset through."""
    data["contract"]["rules"].append({"name": "nothing_left", "expr": "amount < -1", "severity": "quarantine"})
    data["contract"]["min_rows"] = {"value": 0, "severity": "warn"}


def test_a_contract_that_quarantines_every_record_empties_the_views(tmp_path: Path) -> None:
    """An empty clean dataset committed by validation is input like any other: every offline row goes, every entity
    leaves the online store; once the records are clean again the views come back in full."""
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    frame = loop.load_demo()
    loop.materialize()
    loop.reconfigure(quarantine_everything)
    assert loop.validate().report.rows_clean == 0
    for view, update in loop.features().items():
        assert (update.offline_rows, update.rows_removed, update.computed_until) == (0, len(frame), None), view
        assert len(loop.offline(view)) == 0
    deleted = loop.materialize()
    assert {v: m.rows_deleted for v, m in deleted.items()} == {CUSTOMERS: frame["customer_id"].nunique(), MERCHANTS: 10}
    assert loop.online_entity_counts() == {CUSTOMERS: 0, MERCHANTS: 0}
    assert all((u.rows_added, u.rows_removed) == (0, 0) for u in loop.features().values())  # nothing left to do

    loop.reconfigure(lambda data: None)  # the demo contract again: every record is clean once more
    loop.validate()
    assert {v: u.offline_rows for v, u in loop.features().items()} == {CUSTOMERS: len(frame), MERCHANTS: len(frame)}
    loop.materialize()
    assert_online_equals_latest_offline(loop)


def test_clean_files_deleted_under_a_long_read_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature run reading a clean manifest whose files a newer validation replaced and removed (past their grace)
    meanwhile reads the clean dataset again instead of failing on a missing file."""
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    frame = loop.load_demo()
    loop.reconfigure(tighten)
    real_read = features_module._CleanRows.read
    replaced: list[bool] = []

    def read(self: features_module._CleanRows, date: str):  # the first read: a validation replaces the clean files
        if not replaced:
            replaced.append(True)
            validate(loop.config, loop.storage, now=NOW, policy=CommitPolicy(retire_grace_s=0))
            assert not loop.storage.exists(self.manifest.files[0].key)
        return real_read(self, date)

    monkeypatch.setattr(features_module._CleanRows, "read", read)
    updates = loop.features()
    assert replaced
    fresh = fresh_build(tmp_path, frame, tighten)
    for view, update in updates.items():
        assert update.offline_rows == len(frame) - len(quarantined_by_tighten(frame))
        assert_tables_match(loop.offline(view), fresh.offline(view))
