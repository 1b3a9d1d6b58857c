"""Serving honours each view's TTL as the training set's point-in-time join does, on SQLite and on Redis:
a stored row older than the TTL at request time is missing (None, flagged), a fresh one is served, and the
boundary instant falls on the same side in both. The store still holds the old row (the SDK returns it)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from kfloop.config.contract import parse_duration
from kfloop.config.features import TIME_SINCE_PREVIOUS
from kfloop.feature_repo.online import ServingLookup
from tests.feature_repo.harness import (
    CUSTOMERS,
    HAND_CUSTOMER_ROWS,
    HAND_MERCHANT_ROWS,
    HAND_ROWS,
    MERCHANTS,
    US,
    Loop,
    OnlineBackend,
    assert_hand_assumptions,
    assert_values,
    view_section,
    write_csv,
)


def at(when: str) -> datetime:
    return pd.Timestamp(when, tz="UTC").to_pydatetime()


def lookup_at(loop: Loop, when: datetime) -> ServingLookup:
    return ServingLookup(loop.store(), loop.config.features.service, clock=lambda: when)


def test_a_row_older_than_its_ttl_is_missing_and_flagged_a_fresh_one_is_served(
    tmp_path: Path, online_backend: OnlineBackend
) -> None:
    loop = Loop.create(tmp_path / "ws", online_backend)
    assert_hand_assumptions(loop.config)
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    loop.materialize()
    customers, merchants = loop.spec(CUSTOMERS).feature_names(), loop.spec(MERCHANTS).feature_names()
    # on 02-20: c-1's newest row (tx-5, 01-08) is 42 days old > ttl 30d; c-2's (tx-8, 02-15) is 5 days old;
    # merchant rows (ttl 60d): m-1's (tx-8) 5 days, m-2's (tx-6, 01-02) 49 days
    lookup = lookup_at(loop, at("2026-02-20T00:00:00"))
    keys = {"customer_id": ["c-1", "c-2", "c-1"], "merchant_id": ["m-1", "m-2", "m-2"]}
    values, missing = lookup.get_batch(keys)
    assert {k: v.tolist() for k, v in missing.items()} == {"customer_id": [True, False, True]}
    rows = [{name: values[name][i] for name in lookup.feature_names} for i in range(3)]
    assert_values(rows[0], None, customers, "c-1, expired")
    assert_values(rows[1], HAND_CUSTOMER_ROWS["tx-8"], customers, "c-2, fresh")
    assert_values(rows[2], None, customers, "c-1, expired")
    assert_values(rows[0], HAND_MERCHANT_ROWS["tx-8"], merchants, "m-1, fresh")
    assert_values(rows[1], HAND_MERCHANT_ROWS["tx-6"], merchants, "m-2, fresh")
    for i in range(3):  # the one-row path agrees
        assert lookup.get({k: v[i] for k, v in keys.items()}) == rows[i]
    # the store still holds c-1's row (Feast's SDK serves it regardless of age): only serving drops it
    sdk = loop.online([{"customer_id": "c-1", "merchant_id": "m-1"}])
    assert_values({f: sdk[f][0] for f in customers}, HAND_CUSTOMER_ROWS["tx-5"], customers, "SDK c-1")
    # a day after tx-5 the same row is served
    values, missing = lookup_at(loop, at("2026-01-09T09:00:00")).get_batch(
        {"customer_id": ["c-1"], "merchant_id": ["m-2"]}
    )
    assert missing == {}
    assert_values({f: values[f][0] for f in customers}, HAND_CUSTOMER_ROWS["tx-5"], customers, "c-1 on 01-09")


#: (customer, delay, joined/served): its second transaction comes ttl + delay after its first. Training asks
#: for t - 1 µs and Feast keeps a row while feature_ts >= as_of - ttl, so ttl + 1 µs is still in.
BOUNDARY = [("c-20", -US, True), ("c-21", 0 * US, True), ("c-22", US, True), ("c-23", 2 * US, False)]


def test_the_ttl_boundary_at_serving_is_the_training_sets(tmp_path: Path, online_backend: OnlineBackend) -> None:
    """Each boundary customer has one transaction at t0, then one at t0 + ttl + delay. Serving asked at that
    second instant (while the store holds the t0 row) and the training row of that transaction agree."""
    loop = Loop.create(tmp_path / "ws", online_backend)
    ttl = parse_duration(loop.spec(CUSTOMERS).ttl)
    t0 = pd.Timestamp("2026-03-01T10:00:00", tz="UTC")
    seconds = {c: t0 + ttl + delay for c, delay, _ in BOUNDARY}

    def row(tx: str, customer: str, when: pd.Timestamp) -> tuple:
        return (tx, customer, "m-9", when.strftime("%Y-%m-%dT%H:%M:%S.%f"), 12.5, 0)

    firsts = [row(f"tx-1{i}", c, t0) for i, (c, *_) in enumerate(BOUNDARY)]
    loop.load(write_csv(tmp_path / "first.csv", [*HAND_ROWS, *firsts]))  # the hand rows fill the splits
    loop.materialize()
    # every customer feature but the gap to the previous event (none: each row is the customer's first)
    customers = [f for f in loop.spec(CUSTOMERS).feature_names() if f != TIME_SINCE_PREVIOUS]
    served = {}
    for customer, _, _ in BOUNDARY:
        values, missing = lookup_at(loop, seconds[customer].to_pydatetime()).get_batch(
            {"customer_id": [customer], "merchant_id": ["m-9"]}
        )
        present = [values[f][0] is not None for f in customers]
        assert len(set(present)) == 1, (customer, values)
        assert bool(missing.get("customer_id", [False])[0]) is not present[0]  # flagged exactly when dropped
        served[customer] = present[0]

    loop.load(
        write_csv(tmp_path / "second.csv", [row(f"tx-2{i}", c, seconds[c]) for i, (c, *_) in enumerate(BOUNDARY)])
    )
    rows = pd.concat(loop.splits(loop.training_set()).values(), ignore_index=True)
    joined = {}
    for customer, _, _ in BOUNDARY:
        (training,) = rows[(rows["customer_id"] == customer) & (rows["event_timestamp"] == seconds[customer])].to_dict(
            "records"
        )
        present = [not pd.isna(training[f]) for f in customers]
        assert len(set(present)) == 1, (customer, training)
        joined[customer] = present[0]
    assert served == joined == {c: expected for c, _, expected in BOUNDARY}


def test_a_zero_ttl_never_expires_in_serving_or_training(tmp_path: Path, online_backend: OnlineBackend) -> None:
    """Feast's ttl 0 means no expiry: tx-8 joins c-2's 37-day-old row, and a years-old row is served."""
    loop = Loop.create(tmp_path / "ws", online_backend, lambda d: view_section(d, CUSTOMERS).update(ttl="0s"))
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    loop.materialize()
    customers = loop.spec(CUSTOMERS).feature_names()
    values, missing = lookup_at(loop, at("2031-01-01T00:00:00")).get_batch(
        {"customer_id": ["c-1"], "merchant_id": ["m-1"]}
    )
    assert set(missing) == {"merchant_id"}  # merchant_risk keeps its 60d ttl
    assert_values({f: values[f][0] for f in customers}, HAND_CUSTOMER_ROWS["tx-5"], customers, "c-1 in 2031")
    rows = pd.concat(loop.splits(loop.training_set()).values(), ignore_index=True)
    (tx8,) = rows[rows["event_timestamp"] == pd.Timestamp("2026-02-15T09:00:00", tz="UTC")].to_dict("records")
    assert_values(tx8, HAND_CUSTOMER_ROWS["tx-7"], customers, "tx-8 with ttl 0")
