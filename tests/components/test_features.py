"""Feature stage: exact offline rows on a hand-checkable fixture, label delay, idempotent and incremental
computation (incremental == full recompute), rebuild of a changed view definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfloop.components.features import compute_features, definition_hash
from kfloop.config import parse_config
from kfloop.errors import SourceError
from kfloop.layout import offline_key, state_key
from tests.feature_repo.harness import (
    CUSTOMERS,
    HAND_CUSTOMER_ROWS,
    HAND_MERCHANT_ROWS,
    HAND_ROWS,
    HAND_TIME,
    MERCHANTS,
    Loop,
    assert_hand_assumptions,
    assert_values,
    demo_frames,
    feature_config,
    sqlite_backend,
    view_section,
    write_csv,
)

# compute_features never touches the online store: one backend (the default SQLite) is enough here.


def hand_loop(tmp_path: Path) -> Loop:
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    assert_hand_assumptions(loop.config)
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    return loop


def assert_tables_match(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same rows in the same order; integers exact, floats to 1e-9 (prefix sums over different history)."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for col in got.columns:
        a, b = got[col].reset_index(drop=True), want[col].reset_index(drop=True)
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            pd.testing.assert_series_equal(a, b, check_names=False, obj=col)


# --- exact values on the hand-checkable fixture -----------------------------------------------------------------


def test_hand_fixture_offline_rows_are_exact(tmp_path: Path) -> None:
    loop = hand_loop(tmp_path)
    for view, expected in ((CUSTOMERS, HAND_CUSTOMER_ROWS), (MERCHANTS, HAND_MERCHANT_ROWS)):
        spec = loop.spec(view)
        table = loop.offline(view)
        assert list(table.columns) == [spec.entity, "event_timestamp", *spec.feature_names()]
        assert len(table) == len(HAND_ROWS)  # one row per (entity, event time)
        assert table["event_timestamp"].is_monotonic_increasing  # sorted by event time
        by_key = {(r[spec.entity], r["event_timestamp"]): r for r in table.to_dict("records")}
        for tx, cust, merch, *_ in HAND_ROWS:
            key = (cust if view == CUSTOMERS else merch, HAND_TIME[tx])
            assert_values(by_key[key], expected[tx], spec.feature_names(), f"{view} row of {tx}")


def test_fraud_rate_reflects_a_label_only_after_label_delay(tmp_path: Path) -> None:
    """tx-1 (m-1, 01-01 10:00) is fraud; label_delay 7d: m-1's rate is unknown 6d 23h later, 1.0 at 7d 1h."""
    loop = hand_loop(tmp_path)
    m1 = loop.offline(MERCHANTS).set_index("event_timestamp")
    m1 = m1[m1["merchant_id"] == "m-1"]["is_fraud_mean_30d"]
    assert m1[: HAND_TIME["tx-5"]].isna().all()  # every row before fraud + 7d: label not known yet
    assert m1[HAND_TIME["tx-7"]] == 1.0  # fraud + 7d 1h: tx-1 is the only labelled transaction
    # the same data with label_delay 8d: at 7d 1h the label is still unknown
    later = Loop.create(tmp_path / "ws8", sqlite_backend(), edit=lambda d: d["features"].update(label_delay="8d"))
    later.load(write_csv(tmp_path / "hand8.csv", HAND_ROWS))
    m1_8 = later.offline(MERCHANTS).set_index("event_timestamp")
    m1_8 = m1_8[m1_8["merchant_id"] == "m-1"]["is_fraud_mean_30d"]
    assert m1_8[: HAND_TIME["tx-7"]].isna().all()
    assert m1_8[HAND_TIME["tx-8"]] == 0.0  # window (01-08 09:00, 02-07 09:00]: tx-7 only (no fraud); tx-1 is out


# --- idempotence, incrementality, rebuilds -----------------------------------------------------------------------


def test_rerun_adds_no_rows_and_leaves_tables_untouched(tmp_path: Path) -> None:
    early, _ = demo_frames()
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    first = loop.load(early)
    assert {u.rows_added for u in first.values()} == {len(early)}  # distinct (entity, time) in generated data
    assert all(u.rebuilt for u in first.values())
    files = {v: (tmp_path / "ws" / offline_key(v)).read_bytes() for v in first}
    states = {v: (tmp_path / "ws" / state_key(v)).read_text() for v in first}
    again = loop.features()
    for view, update in again.items():
        assert (update.rows_added, update.rebuilt) == (0, False), view
        assert update.offline_rows == len(early)
        assert update.computed_until == first[view].computed_until
        assert (tmp_path / "ws" / offline_key(view)).read_bytes() == files[view], view
        assert (tmp_path / "ws" / state_key(view)).read_text() == states[view], view


def incremental_and_full(tmp_path: Path) -> tuple[Loop, Loop]:
    """The same data computed in two runs (the second from the watermark) and in one run."""
    early, late = demo_frames()
    inc = Loop.create(tmp_path / "inc", sqlite_backend())
    inc.load(early)
    second = inc.features() | inc.load(late)
    for view, update in second.items():
        assert (update.rows_added, update.rebuilt) == (len(late), False), view
        assert update.offline_rows == len(early) + len(late)
        assert update.computed_until == late["event_timestamp"].max().isoformat()
    full = Loop.create(tmp_path / "full", sqlite_backend())
    full.load(pd.concat([early, late]))
    return inc, full


def test_incremental_computation_equals_a_full_recompute(tmp_path: Path) -> None:
    """New rows computed from the watermark (with the windows' and the label delay's lookback) equal the rows
    computed from all data at once: every windowed aggregate of both views."""
    inc, full = incremental_and_full(tmp_path)
    for view in (CUSTOMERS, MERCHANTS):
        windowed = [c for c in full.offline(view).columns if c != "seconds_since_previous"]
        assert_tables_match(inc.offline(view)[windowed], full.offline(view)[windowed])


def test_incremental_seconds_since_previous_equals_a_full_recompute(tmp_path: Path) -> None:
    inc, full = incremental_and_full(tmp_path)
    cols = ["customer_id", "event_timestamp", "seconds_since_previous"]
    assert_tables_match(inc.offline(CUSTOMERS)[cols], full.offline(CUSTOMERS)[cols])


def test_changed_view_definition_rebuilds_that_view_only(tmp_path: Path) -> None:
    early, late = demo_frames()
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    loop.load(early)
    merchants_before = (tmp_path / "ws" / offline_key(MERCHANTS)).read_bytes()

    def add_max(data: dict) -> None:
        view_section(data, CUSTOMERS)["aggregates"][0]["functions"].append("max")

    old_hash = definition_hash(loop.spec(CUSTOMERS), loop.config)
    loop.reconfigure(add_max)
    assert definition_hash(loop.spec(CUSTOMERS), loop.config) != old_hash
    updates = loop.features()
    assert updates[CUSTOMERS].rebuilt and updates[CUSTOMERS].rows_added == len(early)
    assert (updates[MERCHANTS].rebuilt, updates[MERCHANTS].rows_added) == (False, 0)
    assert (tmp_path / "ws" / offline_key(MERCHANTS)).read_bytes() == merchants_before
    table = loop.offline(CUSTOMERS)
    assert {"amount_max_1h", "amount_max_24h", "amount_max_7d"} <= set(table.columns)
    # the rebuilt table is what a fresh workspace computes with the new definition
    fresh = Loop.create(tmp_path / "fresh", sqlite_backend(), edit=add_max)
    fresh.load(early)
    assert_tables_match(table, fresh.offline(CUSTOMERS))
    # windows include the row itself: the 1h max is at least the transaction's own amount
    joined = table.merge(early, on=["customer_id", "event_timestamp"])
    assert len(joined) == len(early)
    assert (joined["amount_max_1h"] >= joined["amount"]).all()
    # and the next run continues incrementally with the new definition
    assert {u.rows_added for u in loop.load(late).values()} == {len(late)}
    assert not any(u.rebuilt for u in loop.features().values())


def test_changed_ttl_also_counts_as_a_new_definition(tmp_path: Path) -> None:
    config = feature_config(tmp_path / "ws", sqlite_backend())
    longer = feature_config(
        tmp_path / "ws", sqlite_backend(), edit=lambda d: view_section(d, CUSTOMERS).update(ttl="40d")
    )
    assert definition_hash(config.features.views[0], config) != definition_hash(longer.features.views[0], longer)
    assert definition_hash(config.features.views[1], config) == definition_hash(longer.features.views[1], longer)


# --- errors -------------------------------------------------------------------------------------------------------


def test_no_clean_data_or_no_views_is_a_clear_error(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    with pytest.raises(SourceError, match=r"transactions_clean.*run validation first"):
        compute_features(loop.config, loop.storage)
    data = loop.config.model_dump(mode="json")
    data["features"]["views"] = []
    with pytest.raises(SourceError, match=r"features\.views is empty"):
        compute_features(parse_config(data, "test"), loop.storage)
