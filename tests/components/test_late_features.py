"""A late row within ``source.allowed_lateness`` reaches the features: after the next ingest → validate →
features → materialize, its customer's offline rows and online values equal a from-scratch computation over
all the rows, and every other entity keeps the values it had."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd

from tests.components.test_feature_recompute import assert_same_online, fresh_build, online_rows
from tests.components.test_features import assert_tables_match
from tests.feature_repo.harness import CUSTOMERS, MERCHANTS, Loop, assert_online_equals_latest_offline, demo_frames
from tests.feature_repo.harness import sqlite_backend as sqlite


def lateness(data: dict) -> None:
    data["source"]["allowed_lateness"] = "7d"


def test_a_late_row_recomputes_its_entities_features_and_online_values(tmp_path: Path) -> None:
    early, _ = demo_frames()
    early = early.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    watermark = early["event_timestamp"].max()
    ts = early["event_timestamp"]
    late = early[(ts > watermark - timedelta(days=5)) & (ts < watermark - timedelta(days=2))].iloc[[0]]
    customer, merchant = late["customer_id"].iloc[0], late["merchant_id"].iloc[0]
    base = early.drop(index=late.index)
    loop = Loop.create(tmp_path / "ws", sqlite(), edit=lateness)
    loop.load(base)
    loop.materialize()
    customers, merchants = sorted(early["customer_id"].unique()), sorted(early["merchant_id"].unique())
    rows = online_rows(customers, merchants)
    names = loop.config.features.feature_names()
    before_online = loop.online(rows)
    before = {v: loop.offline(v) for v in (CUSTOMERS, MERCHANTS)}

    loop.ingest(late)
    assert loop.validate().report.rows_clean == len(early)
    updates = loop.features()
    loop.materialize()

    fresh = fresh_build(tmp_path, early, lateness)
    entity = {CUSTOMERS: ("customer_id", customer), MERCHANTS: ("merchant_id", merchant)}
    for view, update in updates.items():
        assert not update.rebuilt and update.changed_dates == [late["event_timestamp"].dt.strftime("%Y-%m-%d").iloc[0]]
        table = loop.offline(view)
        assert_tables_match(table, fresh.offline(view))  # what a from-scratch computation gives
        key, value = entity[view]
        others, was = table[table[key] != value], before[view][before[view][key] != value]
        assert_tables_match(others.reset_index(drop=True), was.reset_index(drop=True))  # other entities: unchanged
        assert (table[key] == value).sum() == (before[view][key] == value).sum() + 1
    assert_online_equals_latest_offline(loop)
    now_online = loop.online(rows)
    assert_same_online(now_online, fresh.online(rows), names)
    # the late row's customer changed online; every other customer answers as before
    customer_features = loop.spec(CUSTOMERS).feature_names()
    mine = [i for i, r in enumerate(rows) if r["customer_id"] == customer]
    assert any(now_online[f][i] != before_online[f][i] for f in customer_features for i in mine)
    other = [i for i, r in enumerate(rows) if r["customer_id"] != customer]
    keep = {f: [before_online[f][i] for i in other] for f in customer_features}
    assert_same_online({f: [now_online[f][i] for i in other] for f in customer_features}, keep, customer_features)


def test_a_label_known_later_reaches_the_training_set(tmp_path: Path) -> None:
    """A row delivered unlabeled, then again with its label: one row downstream, with the label, in training."""
    early, _ = demo_frames()
    early = early.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    target = early.index[-20]
    first = early.copy()
    first["is_fraud"] = first["is_fraud"].astype("Int64")
    first.loc[target, "is_fraud"] = pd.NA  # the label is not known at the first delivery
    loop = Loop.create(tmp_path / "ws", sqlite(), edit=lateness)
    loop.load(first)
    before = loop.training_set()
    assert before.unlabeled_rows_dropped == 1
    update = early.loc[[target]].copy()
    update["is_fraud"] = 1 - update["is_fraud"]  # whatever it is, the later delivery's label wins
    loop.load(update)
    clean = loop.clean()
    row = clean[clean["transaction_id"] == update["transaction_id"].iloc[0]]
    assert len(clean) == len(early) and len(row) == 1 and row["is_fraud"].iloc[0] == update["is_fraud"].iloc[0]
    after = loop.training_set()
    assert after.unlabeled_rows_dropped == 0 and sum(after.rows.values()) == sum(before.rows.values()) + 1
    rows = pd.concat(loop.splits(after).values())
    keys = ["customer_id", "merchant_id", "event_timestamp"]
    got = rows.merge(update[keys], on=keys)
    assert len(got) == 1 and got["is_fraud"].iloc[0] == update["is_fraud"].iloc[0]
