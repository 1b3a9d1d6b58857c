"""Leak test: columns known only after their event (``source.available_after``, both forms) never show in a
feature before they are known, in the offline table (every row, against the definition) nor in the training
set (every row, as of just before its event); on a fixture where a leaked value would change the features."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop.config.contract import parse_duration
from tests.feature_repo.harness import CUSTOMERS, Loop, demo_frames, sqlite_backend, view_section

LATE = {"refund": {"at": "settled_at"}, "chargeback": "2d"}  # known at another column's time / 2 days later
WINDOWS = ("24h", "7d")
FUNCTIONS = ("sum", "count", "max")


def late_columns(data: dict) -> None:
    source = data["source"]
    source["columns"] |= {"refund": "float64", "settled_at": "timestamp", "chargeback": "float64"}
    source["available_after"] = LATE
    data["contract"]["completeness"]["columns"] = ["amount"]  # settled_at is null while not settled
    view_section(data, CUSTOMERS)["aggregates"] += [
        {"column": c, "functions": list(FUNCTIONS), "windows": list(WINDOWS)} for c in LATE
    ]


def fixture() -> pd.DataFrame:
    """The demo's early transactions, settled 1 h before (taken as at the event) to 3 days after, 5 % a month
    later (older than any window plus delay: an increment must read them), 10 % not yet."""
    frame, _ = demo_frames()
    rng = np.random.default_rng(4)
    n = len(frame)
    frame["refund"] = np.round(rng.gamma(2.0, 20.0, n), 2)
    minutes = rng.integers(-60, 72 * 60, n) + np.where(rng.random(n) < 0.05, 30 * 24 * 60, 0)
    settled = frame["event_timestamp"] + pd.to_timedelta(minutes, unit="min")
    frame["settled_at"] = settled.where(rng.random(n) > 0.1)
    frame["chargeback"] = np.round(rng.gamma(1.5, 10.0, n), 2)
    return frame


def known_times(clean: pd.DataFrame, column: str) -> pd.Series:
    """When each row's value of ``column`` is known (NaT: not yet), by the declaration in LATE."""
    ts = clean["event_timestamp"]
    rule = LATE[column]
    if isinstance(rule, dict):
        at = clean[rule["at"]]
        return at.where(at > ts, ts).where(at.notna())
    return ts + parse_duration(rule)


def expected(clean: pd.DataFrame, offline: pd.DataFrame, column: str, *, known: bool = True) -> pd.DataFrame:
    """The definition per offline row: the entity's values known in (t - window, t]; ``known=False``: the
    leaky one, by event time."""
    when = known_times(clean, column) if known else clean["event_timestamp"]
    rows = []
    for entity, t in offline[["customer_id", "event_timestamp"]].itertuples(index=False):
        mine = clean["customer_id"] == entity
        row = {}
        for w in WINDOWS:
            values = clean.loc[mine & (when > t - parse_duration(w)) & (when <= t), column]
            row |= {
                f"{column}_sum_{w}": values.sum() if len(values) else np.nan,
                f"{column}_count_{w}": len(values),
                f"{column}_max_{w}": values.max() if len(values) else np.nan,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def test_no_late_value_appears_before_it_is_known(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), edit=late_columns)
    loop.load(fixture())
    clean, offline = loop.clean(), loop.offline(CUSTOMERS).reset_index(drop=True)
    for column in LATE:
        want = expected(clean, offline, column)
        for name in want.columns:
            np.testing.assert_allclose(
                offline[name].to_numpy(float), want[name].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=name
            )
        leaky = expected(clean, offline, column, known=False)[f"{column}_sum_24h"]
        differs = ~np.isclose(leaky.to_numpy(float), want[f"{column}_sum_24h"].to_numpy(float), equal_nan=True)
        assert differs.mean() > 0.2, f"{column}: a leak must change many rows for this test to mean anything"

    # the training set: each row carries the entity's offline row as of just before its event (within the ttl)
    result = loop.training_set()
    rows = pd.concat(loop.splits(result).values(), ignore_index=True).sort_values("event_timestamp", kind="stable")
    late = [f"{c}_{f}_{w}" for c in LATE for f in FUNCTIONS for w in WINDOWS]
    assert not set(late) & set(result.request_features) and set(late) <= set(result.features)
    asof = pd.merge_asof(
        rows[["customer_id", "event_timestamp"]].reset_index(drop=True),
        offline[["customer_id", "event_timestamp", *late]].rename(columns={"event_timestamp": "row_time"}),
        left_on="event_timestamp",
        right_on="row_time",
        by="customer_id",
        allow_exact_matches=False,
        tolerance=pd.Timedelta(loop.spec(CUSTOMERS).ttl.replace("d", "D")) + timedelta(microseconds=1),
    )
    assert (asof["row_time"].isna() | (asof["row_time"] < asof["event_timestamp"])).all()
    for name in late:
        np.testing.assert_allclose(
            rows[name].to_numpy(float), asof[name].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=name
        )
    assert (rows["refund_count_7d"] > 0).mean() > 0.5 and (rows["chargeback_count_7d"] > 0).mean() > 0.5


def test_an_increment_reads_the_history_a_late_value_needs(tmp_path: Path) -> None:
    """Values settled a month late land in windows far past the watermark's look-back: the view computed in
    two runs equals the one computed at once."""
    frame = fixture()
    cut = frame["event_timestamp"].min() + pd.Timedelta(days=30)
    inc = Loop.create(tmp_path / "inc", sqlite_backend(), edit=late_columns)
    inc.load(frame[frame["event_timestamp"] < cut])
    inc.load(frame[frame["event_timestamp"] >= cut])
    full = Loop.create(tmp_path / "full", sqlite_backend(), edit=late_columns)
    full.load(frame)
    late = [c for c in full.offline(CUSTOMERS).columns if c.startswith(tuple(LATE))]
    got, want = inc.offline(CUSTOMERS)[late], full.offline(CUSTOMERS)[late]
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=1e-9, equal_nan=True)


def test_a_value_settled_later_reaches_the_features_from_its_settlement(tmp_path: Path) -> None:
    """Rows ingested unsettled, then again with their settlement (an upsert by key): the view equals one built
    from the settled rows at once, and the refund counts from its settlement, not from its event."""

    def upserts(data: dict) -> None:
        late_columns(data)
        data["source"]["allowed_lateness"] = "7d"
        data["contract"]["duplicates"]["mode"] = "keep_last_ingested"

    frame = fixture().sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    recent = frame.index[frame["event_timestamp"] > frame["event_timestamp"].max() - pd.Timedelta(days=3)]
    settled = frame.loc[recent].assign(settled_at=frame.loc[recent, "event_timestamp"] + pd.Timedelta(hours=5))
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), edit=upserts)
    loop.load(frame.assign(settled_at=frame["settled_at"].where(~frame.index.isin(recent))))
    loop.load(settled)
    final = frame.copy()
    final.loc[recent, "settled_at"] = settled["settled_at"]
    fresh = Loop.create(tmp_path / "fresh", sqlite_backend(), edit=upserts)
    fresh.load(final)
    late = [c for c in fresh.offline(CUSTOMERS).columns if c.startswith(tuple(LATE))]
    got, want = loop.offline(CUSTOMERS), fresh.offline(CUSTOMERS)
    assert len(got) == len(want)
    np.testing.assert_allclose(got[late].to_numpy(float), want[late].to_numpy(float), rtol=1e-9, equal_nan=True)
    clean = loop.clean()
    np.testing.assert_allclose(
        got["refund_sum_24h"].to_numpy(float),
        expected(clean, got, "refund")["refund_sum_24h"].to_numpy(float),
        rtol=1e-9,
        equal_nan=True,
    )
