"""Per-column availability in the feature engine: a value counts only from the time it is known, as a delay
(the label's ``label_delay`` is that case) or at another column's time; hand-checked and against a naive loop."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kfloop.aggregates import compute_view
from kfloop.config.availability import Availability, KnownAt
from kfloop.config.contract import parse_duration
from kfloop.config.features import Aggregate, FeatureViewSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
TS = pa.timestamp("us", tz="UTC")
DELAY = timedelta(days=7)
TYPES = {"customer_id": pa.string(), "ts": TS, "known": TS, "outcome": pa.float64(), "is_fraud": pa.int64()}


def at(hours: float = 0, us: int = 0) -> datetime:
    return T0 + timedelta(hours=hours) + us * US


def table(rows: list[dict]) -> pa.Table:
    return pa.table({n: pa.array([r.get(n) for r in rows], t) for n, t in TYPES.items()})


def outcome_view(*functions: str, windows: tuple[str, ...] = ("24h",), column: str = "outcome") -> FeatureViewSpec:
    aggregate = Aggregate(column=column, functions=functions, windows=windows)
    return FeatureViewSpec(name="v", entity="customer_id", aggregates=(aggregate,))


def by_time(out: pa.Table) -> dict[datetime, dict]:
    return {r["event_timestamp"]: r for r in out.to_pylist()}


def test_a_value_counts_from_the_time_in_its_at_column() -> None:
    rows = [
        {"customer_id": "A", "ts": at(0), "outcome": 10.0, "known": at(5)},
        {"customer_id": "A", "ts": at(1), "outcome": 100.0},  # null: not known yet, in no window
        {"customer_id": "A", "ts": at(2), "outcome": 1.0, "known": at(1)},  # never before its own event
        {"customer_id": "A", "ts": at(6), "outcome": 1000.0, "known": at(6)},
        *({"customer_id": "A", "ts": t} for t in (at(4), at(5, -1), at(5))),
        {"customer_id": "B", "ts": at(3), "outcome": 7.0, "known": at(3)},  # another entity's value never counts
    ]
    spec = outcome_view("sum", "count", "max")
    got = by_time(compute_view(table(rows[::-1]), spec, "ts", DELAY, available_after={"outcome": KnownAt(at="known")}))
    want = {  # time: (sum, count, max) over the rows known in (t - 24h, t]
        at(0): (None, 0, None),
        at(1): (None, 0, None),
        at(2): (1.0, 1, 1.0),
        at(4): (1.0, 1, 1.0),
        at(5, -1): (1.0, 1, 1.0),
        at(5): (11.0, 2, 10.0),
        at(6): (1011.0, 3, 1000.0),
    }
    for t, values in want.items():
        r = got[t]
        assert (r["outcome_sum_24h"], r["outcome_count_24h"], r["outcome_max_24h"]) == values, t
    # known 5h after its event, the value leaves the 24h window 24h after it was known, not after the event
    late = compute_view(
        table([*rows, {"customer_id": "A", "ts": at(29)}]),
        spec,
        "ts",
        DELAY,
        available_after={"outcome": KnownAt(at="known")},
    )
    assert by_time(late)[at(29)]["outcome_sum_24h"] == 1000.0


def test_label_delay_is_the_label_case_of_a_delay() -> None:
    """``label_delay: true`` and ``available_after: {is_fraud: 7d}`` give the same table."""
    rng = np.random.default_rng(5)
    rows = [
        {
            "customer_id": f"c{rng.integers(0, 4)}",
            "ts": at(float(rng.integers(0, 24 * 40))),
            "is_fraud": int(rng.random() < 0.3),
        }
        for _ in range(300)
    ]
    flagged = Aggregate(column="is_fraud", functions=("mean", "count", "max"), windows=("30d",), label_delay=True)
    plain = flagged.model_copy(update={"label_delay": False})
    old = compute_view(table(rows), FeatureViewSpec(name="v", entity="customer_id", aggregates=(flagged,)), "ts", DELAY)
    spec = FeatureViewSpec(name="v", entity="customer_id", aggregates=(plain,))
    new = compute_view(table(rows), spec, "ts", timedelta(days=1), available_after={"is_fraud": "7d"})
    assert new.equals(old)
    leaky = compute_view(table(rows), spec, "ts", DELAY)
    assert not leaky.equals(old), "the fixture must be one where the delay matters"


# ---- randomized: the definition, row by row -----------------------------------------------------------------


def random_rows(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        t = at(0, int(rng.integers(0, 3 * 24 * 60)) * 60_000_000 + int(rng.integers(0, 2)))
        known = None if rng.random() < 0.15 else t + timedelta(minutes=int(rng.integers(-120, 36 * 60)))
        value = None if rng.random() < 0.1 else float(np.round(rng.gamma(2.0, 30.0), 2))
        rows.append({"customer_id": f"c{rng.integers(0, 5)}", "ts": t, "outcome": value, "known": known})
    return rows


def naive(rows: list[dict], spec: FeatureViewSpec, known: Availability) -> pd.DataFrame:
    """Each (entity, time): the entity's rows whose value is known in (t - window, t], aggregated by pandas."""
    df = pd.DataFrame(rows)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    if isinstance(known, KnownAt):
        at_col = pd.to_datetime(df[known.at], utc=True)
        df["_known"] = at_col.where(at_col > df["ts"], df["ts"]).where(at_col.notna())
    else:
        df["_known"] = df["ts"] + parse_duration(known)
    out = []
    for (e, t), _ in df.groupby(["customer_id", "ts"]):
        mine = df[df.customer_id == e]
        row: dict = {"customer_id": e, "event_timestamp": t}
        for a in spec.aggregates:
            for w in a.windows:
                s = mine[(mine._known > t - parse_duration(w)) & (mine._known <= t)][a.column]
                values = s.dropna().tolist()
                for fn in a.functions:
                    value = {"count": len(s), "count_distinct": len(set(values))}.get(fn)
                    if value is None and values:
                        value = {"sum": sum, "min": min, "max": max, "mean": statistics.fmean}[fn](values)
                    row[f"{a.column}_{fn}_{w}"] = value
        out.append(row)
    return pd.DataFrame(out).sort_values(["event_timestamp", "customer_id"], ignore_index=True)


@pytest.mark.parametrize("known", [KnownAt(at="known"), "3h"], ids=["at", "delay"])
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_the_definition_and_never_uses_a_value_before_it_is_known(known: Availability, seed: int) -> None:
    rows = random_rows(seed, 300)
    spec = outcome_view("count", "sum", "mean", "min", "max", "count_distinct", windows=("90s", "6h", "24h"))
    got = compute_view(table(rows), spec, "ts", DELAY, available_after={"outcome": known}).to_pandas()
    want = naive(rows, spec, known)
    assert len(got) == len(want)
    assert (got.customer_id == want.customer_id).all()
    for name in spec.feature_names():
        g, w = got[name].astype(float).to_numpy(), want[name].astype(float).to_numpy()
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)
    leaky = compute_view(table(rows), spec, "ts", DELAY).to_pandas()
    assert not np.allclose(leaky["outcome_sum_24h"].astype(float), got["outcome_sum_24h"].astype(float), equal_nan=True)


def test_since_with_an_at_column_equals_the_full_computation() -> None:
    rows = random_rows(3, 200)
    spec = outcome_view("count", "sum", windows=("6h",))
    known = {"outcome": KnownAt(at="known")}
    full = compute_view(table(rows), spec, "ts", DELAY, available_after=known)
    part = compute_view(table(rows), spec, "ts", DELAY, since=at(36), available_after=known)
    assert part.to_pylist() == [r for r in full.to_pylist() if r["event_timestamp"] > at(36)]
