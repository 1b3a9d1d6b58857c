"""The feature engine: exact windows (boundaries, same instant, nulls), label delay, ``since``, and
cross-checks against a naive pandas loop plus a no-future (point-in-time) property."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kfloop import aggregates
from kfloop.aggregates import compute_view
from kfloop.config.contract import parse_duration
from kfloop.config.features import Aggregate, FeatureViewSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
TS = pa.timestamp("us", tz="UTC")
DELAY = timedelta(days=7)


def at(hours: float = 0, us: int = 0) -> datetime:
    return T0 + timedelta(hours=hours) + us * US


def view(*aggregates: Aggregate, entity: str = "customer_id", since_previous: bool = False) -> FeatureViewSpec:
    return FeatureViewSpec(name="v", entity=entity, aggregates=aggregates, time_since_previous=since_previous)


def agg(column: str, functions: tuple, windows: tuple, label_delay: bool = False) -> Aggregate:
    return Aggregate(column=column, functions=functions, windows=windows, label_delay=label_delay)


def table(rows: list[tuple], names: tuple[str, ...] = ("customer_id", "ts", "amount", "merchant_id")) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    types = {"customer_id": pa.string(), "ts": TS, "amount": pa.float64(), "merchant_id": pa.string()}
    return pa.table({n: pa.array(c, types.get(n, pa.int64())) for n, c in zip(names, cols, strict=True)})


# A: boundary rows 1 µs apart; B shares an instant with A but is a separate entity.
FIXTURE = [
    ("A", at(0), 10.0, "m1"),
    ("A", at(0, 1), 20.0, "m2"),
    ("A", at(0.5), 5.0, "m1"),
    ("B", at(0.5), 50.0, "m9"),
    ("A", at(1), 100.0, "m3"),
    ("A", at(1, 1), 1.0, "m1"),
    ("B", at(2), 60.0, "m9"),
    ("A", at(25), 7.0, None),
]
FULL = view(
    agg("amount", ("count", "sum", "mean", "min", "max"), ("1h", "24h")),
    agg("merchant_id", ("count_distinct",), ("1h", "24h")),
    since_previous=True,
)


def rows_of(out: pa.Table) -> dict[tuple[str, datetime], dict]:
    return {(r["customer_id"], r["event_timestamp"]): r for r in out.to_pylist()}


def test_hand_checked_windows_and_boundaries() -> None:
    out = compute_view(table(FIXTURE[::-1]), FULL, "ts", DELAY)  # input order does not matter
    assert out.column_names == ["customer_id", "event_timestamp", *FULL.feature_names()]
    assert out.schema.field("event_timestamp").type == TS
    assert out.schema.field("amount_count_1h").type == pa.int64()
    assert out.schema.field("merchant_id_count_distinct_24h").type == pa.int64()
    assert out.schema.field("amount_mean_24h").type == pa.float64()
    got = rows_of(out)
    # At A's 1h row: (T0, T0+1h] excludes the row at T0 exactly but includes the one 1 µs later.
    r = got["A", at(1)]
    assert (r["amount_count_1h"], r["amount_sum_1h"], r["amount_min_1h"], r["amount_max_1h"]) == (3, 125.0, 5.0, 100.0)
    assert r["amount_mean_1h"] == pytest.approx(125 / 3)
    assert (r["amount_count_24h"], r["amount_sum_24h"], r["amount_mean_24h"]) == (4, 135.0, 33.75)
    assert (r["merchant_id_count_distinct_1h"], r["merchant_id_count_distinct_24h"]) == (3, 3)
    assert r["seconds_since_previous"] == 1800.0
    r = got["A", at(1, 1)]  # now T0+1µs is exactly 1h back: excluded
    assert (r["amount_count_1h"], r["amount_sum_1h"], r["amount_min_1h"], r["merchant_id_count_distinct_1h"]) == (
        3,
        106.0,
        1.0,
        2,
    )
    assert r["seconds_since_previous"] == pytest.approx(1e-6)
    r = got["A", at(25)]  # (T0+1h, T0+25h]: T0+1h is out, T0+1h+1µs in; merchant null not counted
    assert (r["amount_count_1h"], r["amount_sum_1h"], r["merchant_id_count_distinct_1h"]) == (1, 7.0, 0)
    assert (r["amount_count_24h"], r["amount_sum_24h"], r["merchant_id_count_distinct_24h"]) == (2, 8.0, 1)
    assert r["seconds_since_previous"] == pytest.approx(86400 - 1e-6)
    a0, b0, b1 = got["A", at(0)], got["B", at(0.5)], got["B", at(2)]
    assert (a0["amount_count_24h"], a0["amount_sum_24h"], a0["seconds_since_previous"]) == (1, 10.0, None)
    assert (b0["amount_count_24h"], b0["amount_sum_24h"], b0["seconds_since_previous"]) == (1, 50.0, None)
    assert (b1["amount_count_1h"], b1["amount_sum_24h"], b1["seconds_since_previous"]) == (1, 110.0, 5400.0)
    assert (b1["merchant_id_count_distinct_24h"], got["A", at(0.5)]["seconds_since_previous"]) == (1, 1800 - 1e-6)


def test_output_sorted_by_time_then_entity() -> None:
    out = compute_view(table(FIXTURE), FULL, "ts", DELAY)
    keys = [(r["event_timestamp"], r["customer_id"]) for r in out.to_pylist()]
    assert keys == sorted({(t, e) for e, t, *_ in FIXTURE})


def test_rows_sharing_an_instant_give_the_same_bits_in_any_input_order() -> None:
    """A float sum depends on the order of its terms: rows sharing an entity and an instant are summed in value
    order, so the same rows in any order give the same table, bit for bit (the training set's hash rests on it)."""
    same = [("A", at(1), v, f"m{i}") for i, v in enumerate([0.1, 0.2, 0.3, 1e-3, 7.7])]
    rows = [("A", at(0), 1.0, "m0"), *same, ("A", at(2), 2.0, None), ("B", at(1), 0.3, "m1")]
    orders = [rows, rows[::-1], [rows[i] for i in (3, 1, 5, 7, 2, 0, 6, 4)]]
    assert 1.0 + 0.1 + 0.2 + 0.3 + 1e-3 + 7.7 != 1.0 + 7.7 + 1e-3 + 0.3 + 0.2 + 0.1  # the order of terms matters
    tables = [compute_view(table(order), FULL, "ts", DELAY) for order in orders]
    assert all(t.equals(tables[0]) for t in tables[1:])


def test_same_instant_rows_collapse_to_one_row_with_all_of_them() -> None:
    rows = [("A", at(0), 10.0, "m1"), ("A", at(1), 20.0, "m1"), ("A", at(1), 30.0, "m2"), ("A", at(1), None, "m3")]
    out = compute_view(table(rows), FULL, "ts", DELAY)
    assert out.num_rows == 2
    r = rows_of(out)["A", at(1)]
    assert (r["amount_count_1h"], r["amount_sum_1h"], r["amount_mean_1h"]) == (3, 50.0, 25.0)
    assert (r["amount_min_1h"], r["amount_max_1h"], r["amount_count_24h"]) == (20.0, 30.0, 4)
    assert (r["merchant_id_count_distinct_1h"], r["merchant_id_count_distinct_24h"]) == (3, 3)
    assert r["seconds_since_previous"] == 3600.0  # previous DISTINCT time, not 0


def test_nulls_and_nan_are_ignored() -> None:
    rows = [("A", at(0), None, None), ("A", at(0.5), math.nan, None), ("A", at(0.9), 4.0, "m1")]
    got = rows_of(compute_view(table(rows), FULL, "ts", DELAY))
    r = got["A", at(0.5)]
    assert r["amount_count_1h"] == 2  # count = rows in the window
    assert [r[f"amount_{f}_1h"] for f in ("sum", "mean", "min", "max")] == [None] * 4
    assert r["merchant_id_count_distinct_1h"] == 0
    r = got["A", at(0.9)]
    assert [r[f"amount_{f}_1h"] for f in ("count", "sum", "mean", "min", "max")] == [3, 4.0, 4.0, 4.0, 4.0]


def test_label_is_used_only_after_label_delay() -> None:
    risk = view(
        agg("is_fraud", ("mean", "count", "max"), ("30d",), label_delay=True),
        agg("amount", ("count",), ("30d",)),
        entity="merchant_id",
    )
    names = ("merchant_id", "ts", "amount", "is_fraud")
    rows = [("M", at(0), 1.0, 1), ("M", at(24), 2.0, 0), ("M", at(6 * 24), 3.0, 1)]
    probes = [at(7 * 24, -1), at(7 * 24), at(8 * 24), at(13 * 24), at(37 * 24, -1), at(37 * 24)]
    rows += [("M", t, 0.0, 0) for t in probes]
    got = {r["event_timestamp"]: r for r in compute_view(table(rows, names), risk, "ts", DELAY).to_pylist()}
    # Own label (and the fraud at 6d) unseen at the event; the T0 fraud becomes known exactly 7d later.
    for t in (at(0), at(24), at(6 * 24), at(7 * 24, -1)):
        assert (got[t]["is_fraud_mean_30d"], got[t]["is_fraud_count_30d"], got[t]["is_fraud_max_30d"]) == (
            None,
            0,
            None,
        )
    assert (got[at(7 * 24)]["is_fraud_mean_30d"], got[at(7 * 24)]["is_fraud_count_30d"]) == (1.0, 1)
    assert got[at(8 * 24)]["is_fraud_mean_30d"] == 0.5
    assert got[at(13 * 24)]["is_fraud_mean_30d"] == pytest.approx(2 / 3)
    # 30d + 7d later the T0 fraud leaves the window: (T0 - 1µs, T0 + 30d - 1µs] still holds it.
    assert (got[at(37 * 24, -1)]["is_fraud_count_30d"], got[at(37 * 24, -1)]["is_fraud_max_30d"]) == (7, 1.0)
    assert got[at(37 * 24, -1)]["is_fraud_mean_30d"] == pytest.approx(2 / 7)
    assert (got[at(37 * 24)]["is_fraud_count_30d"], got[at(37 * 24)]["is_fraud_mean_30d"]) == (6, pytest.approx(1 / 6))
    assert got[at(7 * 24, -1)]["amount_count_30d"] == 4  # non-label aggregates are not delayed


def test_since_filters_output_but_uses_older_history() -> None:
    full = compute_view(table(FIXTURE), FULL, "ts", DELAY)
    part = compute_view(table(FIXTURE), FULL, "ts", DELAY, since=at(1))
    assert [r["event_timestamp"] for r in part.to_pylist()] == [at(1, 1), at(2), at(25)]
    assert part.to_pylist() == [r for r in full.to_pylist() if r["event_timestamp"] > at(1)]
    assert rows_of(part)["A", at(1, 1)]["amount_count_24h"] == 5  # counts rows before `since`
    empty = compute_view(table(FIXTURE), FULL, "ts", DELAY, since=at(100))
    assert empty.num_rows == 0 and empty.schema == full.schema


def test_nanosecond_input_is_accepted_only_when_exact() -> None:
    ns = table(FIXTURE).set_column(1, "ts", pa.array([r[1] for r in FIXTURE], pa.timestamp("ns", tz="UTC")))
    assert compute_view(ns, FULL, "ts", DELAY).equals(compute_view(table(FIXTURE), FULL, "ts", DELAY))
    bad = ns.set_column(1, "ts", pa.array([1], pa.timestamp("ns", tz="UTC")).take([0] * ns.num_rows))
    with pytest.raises(pa.ArrowInvalid):
        compute_view(bad, FULL, "ts", DELAY)


# ---- randomized cross-checks ---------------------------------------------------------------------

RANDOM = view(
    agg("amount", ("count", "sum", "mean", "min", "max"), ("90s", "1h", "6h", "24h")),
    agg("merchant_id", ("count_distinct", "count"), ("1h", "24h")),
    agg("is_fraud", ("mean", "count", "count_distinct", "min"), ("12h",), label_delay=True),
    since_previous=True,
)
RANDOM_DELAY = timedelta(hours=3)
NAMES = ("customer_id", "ts", "amount", "merchant_id", "is_fraud")


def random_table(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    minutes = rng.integers(0, 3 * 24 * 60, n)  # many collisions at minute resolution
    jitter = np.where(rng.random(n) < 0.3, rng.integers(0, 3, n), 0)  # and a few µs apart
    amount = np.round(rng.gamma(2.0, 30.0, n), 2)
    rows = [
        (
            f"c{rng.integers(0, 5)}",
            at(0, int(minutes[i]) * 60_000_000 + int(jitter[i])),
            None if rng.random() < 0.1 else float(amount[i]),
            None if rng.random() < 0.1 else f"m{rng.integers(0, 6)}",
            None if rng.random() < 0.1 else int(rng.random() < 0.2),
        )
        for i in range(n)
    ]
    return table(rows, NAMES)


def naive(tbl: pa.Table, spec: FeatureViewSpec, delay: timedelta) -> pd.DataFrame:
    """The definition, row by row: filter the entity's rows to the window, aggregate with pandas."""
    df = tbl.to_pandas()
    out = []
    for (e, t), _ in df.groupby(["customer_id", "ts"]):
        mine = df[df.customer_id == e]
        row: dict = {"customer_id": e, "event_timestamp": t}
        for a in spec.aggregates:
            end = t - delay if a.label_delay else t
            for w in a.windows:
                s = mine[(mine.ts > end - parse_duration(w)) & (mine.ts <= end)][a.column]
                values = s.dropna().tolist()
                for fn in a.functions:
                    value = {"count": len(s), "count_distinct": len(set(values))}.get(fn)
                    if value is None and values:
                        value = {"sum": sum, "min": min, "max": max, "mean": statistics.fmean}[fn](map(float, values))
                    row[f"{a.column}_{fn}_{w}"] = value
        earlier = mine.ts[mine.ts < t]
        row["seconds_since_previous"] = (t - earlier.max()).total_seconds() if len(earlier) else None
        out.append(row)
    columns = ["customer_id", "event_timestamp", *spec.feature_names()]
    return pd.DataFrame(out)[columns].sort_values(["event_timestamp", "customer_id"], ignore_index=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_naive_loop(seed: int) -> None:
    tbl = random_table(seed, 300)
    got = compute_view(tbl, RANDOM, "ts", RANDOM_DELAY).to_pandas()
    want = naive(tbl, RANDOM, RANDOM_DELAY)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) == len(got.drop_duplicates(["customer_id", "event_timestamp"]))
    pd.testing.assert_series_equal(got.event_timestamp, want.event_timestamp, check_dtype=False)
    assert (got.customer_id == want.customer_id).all()
    for name in RANDOM.feature_names():
        g, w = got[name].astype(float).to_numpy(), want[name].astype(float).to_numpy()
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)


def test_point_in_time_no_value_from_the_future() -> None:
    tbl = random_table(7, 150)
    full = compute_view(tbl, RANDOM, "ts", RANDOM_DELAY)
    ts = tbl.column("ts").to_pylist()
    for t in sorted(set(full.column("event_timestamp").to_pylist())):
        past = tbl.filter(pa.array([x <= t for x in ts]))
        now = compute_view(past, RANDOM, "ts", RANDOM_DELAY, since=t - US)
        expected = [r for r in full.to_pylist() if r["event_timestamp"] == t]
        assert now.to_pylist() == expected, t


def test_search_in_entity_batches_when_keys_would_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    tbl = random_table(4, 200)
    expected = compute_view(tbl, RANDOM, "ts", RANDOM_DELAY)
    monkeypatch.setattr(aggregates, "_MAX_KEY", 1)  # one entity per search batch
    assert compute_view(tbl, RANDOM, "ts", RANDOM_DELAY).equals(expected)
