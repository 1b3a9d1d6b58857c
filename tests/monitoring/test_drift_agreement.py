"""Agreement with Evidently: our tests on a cached profile vs ``DataDriftPreset`` on the raw frames.

40 seeded scenarios (no shift, mean and variance shifts, category mix changes, new categories, missing
values and ±inf, borderline p-values and distances, binary and low-cardinality columns), with reference
sizes on both sides of Evidently's 1000-row switch. Each must give the same test per column, the same
drifted set and scores within 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
from scipy import stats

from kfloop.errors import EmptyColumnError
from kfloop.monitoring.drift import DISPLAY_NAMES, column_drift, dataset_drift
from kfloop.monitoring.evidently_tests import bound_profile, register
from kfloop.monitoring.profile import build_profile, profile_from_bytes, profile_to_bytes

TOL = 1e-6
NUMERIC = ["num_normal", "num_skewed", "num_low", "num_ints"]
CATEGORICAL = ["cat_letters", "cat_binary", "cat_codes"]
LETTERS = np.array(["a", "b", "c", "d"], dtype=object)
_BY_DISPLAY = {v: k for k, v in DISPLAY_NAMES.items()}


@dataclass(frozen=True)
class Scenario:
    name: str
    reference: pd.DataFrame
    current: pd.DataFrame


def _frame(
    rng: np.random.Generator, rows: int, mean: float = 0.0, scale: float = 1.0, letters=None, low=3
) -> pd.DataFrame:
    p = letters if letters is not None else [0.4, 0.3, 0.2, 0.1]
    return pd.DataFrame(
        {
            "num_normal": rng.normal(mean, scale, rows),
            "num_skewed": rng.lognormal(mean * 0.5, 0.5 * scale, rows),
            "num_low": rng.integers(0, low, rows).astype(np.float64),
            "num_ints": rng.poisson(10 + 2 * mean, rows),
            "cat_letters": rng.choice(LETTERS[: len(p)], rows, p=p),
            "cat_binary": rng.choice(np.array(["no", "yes"], dtype=object), rows, p=[0.7, 0.3]),
            "cat_codes": rng.integers(0, 3, rows),
        }
    )


def _with_missing(rng: np.random.Generator, frame: pd.DataFrame, share: float) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        mask = rng.random(len(out)) < share
        if col in NUMERIC or col == "cat_codes":
            out[col] = out[col].astype(np.float64).mask(mask)
        else:
            out[col] = out[col].where(~mask, None)
    inf = rng.random(len(out)) < share / 4
    out.loc[inf, "num_normal"] = np.inf
    return out


def _borderline_shift(rng: np.random.Generator, ref_rows: int, cur_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shift num_normal by bisection until Evidently's K-S p-value (small reference) sits near 0.05."""
    ref = _frame(rng, ref_rows)
    base = rng.normal(0, 1, cur_rows)
    cur = _frame(rng, cur_rows)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        p = stats.ks_2samp(ref["num_normal"], base + mid)[1]
        lo, hi = (mid, hi) if p > 0.05 else (lo, mid)
    cur["num_normal"] = base + (lo + hi) / 2
    return ref, cur


def _borderline_distance(rng: np.random.Generator, ref_rows: int, cur_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shift num_normal so the normed Wasserstein distance (large reference) sits near 0.1."""
    ref = _frame(rng, ref_rows)
    cur = _frame(rng, cur_rows)
    base = rng.normal(0, 1, cur_rows)
    norm = float(np.std(ref["num_normal"]))
    lo, hi = 0.0, 1.0
    for _ in range(20):  # within ~1e-6 of 0.1: near, yet far above both sides' rounding (~1e-15)
        mid = (lo + hi) / 2
        w = stats.wasserstein_distance(ref["num_normal"], base + mid) / norm
        lo, hi = (mid, hi) if w < 0.1 else (lo, mid)
    cur["num_normal"] = base + (hi if rng.integers(2) else lo)  # just above or just below
    return ref, cur


def _scenario(i: int) -> Scenario:
    rng = np.random.default_rng(1000 + i)
    ref_rows = [300, 1000, 1001, 2500][i % 4]  # both sides of Evidently's switch, and exactly at it
    cur_rows = [400, 900, 1500, 700, 2000][i % 5]
    kind = i // 4  # ten kinds x four reference sizes
    ref = _frame(rng, ref_rows)
    if kind == 0:
        name, cur = "no shift", _frame(rng, cur_rows)
    elif kind == 1:
        name, cur = "mean shift", _frame(rng, cur_rows, mean=0.3)
    elif kind == 2:
        name, cur = "variance shift", _frame(rng, cur_rows, scale=1.6)
    elif kind == 3:
        name, cur = "category mix", _frame(rng, cur_rows, letters=[0.25, 0.25, 0.25, 0.25])
    elif kind == 4:
        name = "new categories and values"
        cur = _frame(rng, cur_rows)
        new = rng.random(cur_rows) < 0.05
        cur.loc[new, "cat_letters"] = "e"
        cur.loc[new, "num_low"] = 7.0
        cur.loc[rng.random(cur_rows) < 0.03, "cat_codes"] = 9
    elif kind == 5:
        name = "missing values and inf"
        ref, cur = _with_missing(rng, ref, 0.1), _with_missing(rng, _frame(rng, cur_rows, mean=0.1), 0.25)
    elif kind == 6:
        name = "borderline K-S p-value"
        ref, cur = _borderline_shift(rng, min(ref_rows, 900), cur_rows)
    elif kind == 7:
        name = "borderline Wasserstein distance"
        ref, cur = _borderline_distance(rng, max(ref_rows, 1500), cur_rows)
    elif kind == 8:
        name = "binary and low-cardinality shifts"
        ref = _frame(rng, ref_rows, low=2)
        cur = _frame(rng, cur_rows, low=2)
        cur["cat_binary"] = rng.choice(np.array(["no", "yes"], dtype=object), cur_rows, p=[0.6, 0.4])
        cur["num_low"] = rng.choice([0.0, 1.0], cur_rows, p=[0.4, 0.6])
        if i % 2:
            cur["cat_binary"] = "no"  # one value left in the window
    else:
        name = "low cardinality (3-5 values), small window"
        ref = _frame(rng, ref_rows, low=5)
        cur = _frame(rng, 60 + i, low=4, mean=0.2)
    return Scenario(f"{i:02d} {name} (ref {ref_rows})", ref, cur)


SCENARIOS = [_scenario(i) for i in range(40)]


def _definition() -> DataDefinition:
    return DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)


def evidently_drift(reference: pd.DataFrame, current: pd.DataFrame, **preset) -> dict[str, tuple[str, float, bool]]:
    """Evidently's per-column (method, score, drifted) from a ``DataDriftPreset`` run on the raw frames."""
    report = Report([DataDriftPreset(**preset)], include_tests=True)
    dd = _definition()
    snap = report.run(
        Dataset.from_pandas(current, data_definition=dd), Dataset.from_pandas(reference, data_definition=dd)
    )
    data = snap.dict()
    status = {
        t["name"].removeprefix("Value Drift for column "): t["status"].name == "FAIL"
        for t in data["tests"]
        if t["name"].startswith("Value Drift for column ")
    }
    out = {}
    for m in data["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            out[cfg["column"]] = (cfg["method"], float(m["value"]), status[cfg["column"]])
    return out


def _assert_agree(ours, theirs: dict[str, tuple[str, float, bool]], label: str, names=_BY_DISPLAY) -> None:
    got = {c.column: c for c in ours.columns}
    assert set(got) == set(theirs), label
    for col, (method, score, _) in theirs.items():
        c = got[col]
        assert names.get(method, method) == c.stattest, f"{label} {col}: {method} vs {c.stattest}"
        assert abs(c.score - score) <= TOL, f"{label} {col} ({c.stattest}): ours {c.score!r}, Evidently {score!r}"
    assert {c for c, v in got.items() if v.drifted} == {c for c, t in theirs.items() if t[2]}, label


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_default_preset_agreement(scenario: Scenario) -> None:
    profile = profile_from_bytes(profile_to_bytes(build_profile(scenario.reference, NUMERIC, CATEGORICAL)))
    ours = dataset_drift(profile, scenario.current)
    theirs = evidently_drift(scenario.reference, scenario.current)
    _assert_agree(ours, theirs, scenario.name)
    share = sum(t[2] for t in theirs.values()) / len(theirs)
    assert ours.drifted_share == pytest.approx(share)
    assert ours.dataset_drift == (share >= 0.5)


def test_scenarios_cover_every_default_test_and_both_verdicts() -> None:
    seen: set[tuple[str, bool]] = set()
    for s in SCENARIOS:
        profile = build_profile(s.reference, NUMERIC, CATEGORICAL)
        seen |= {(c.stattest, c.drifted) for c in dataset_drift(profile, s.current).columns}
    assert {t for t, _ in seen} == set(DISPLAY_NAMES)
    assert all((t, v) in seen for t in ("ks", "wasserstein", "chisquare", "jensenshannon", "z") for v in (True, False))


@pytest.mark.parametrize(
    ("i", "preset"),
    [
        (1, {"num_method": "ks", "cat_method": "jensenshannon"}),  # K-S on a large reference (exact path)
        (3, {"num_method": "wasserstein", "cat_method": "chisquare"}),
        (2, {"num_method": "jensenshannon", "cat_method": "z"}),  # Sturges bins (> 20 values)
        (21, {"num_method": "jensenshannon", "threshold": 0.2}),  # missing values + a custom threshold
        (4, {"num_method": "ks", "num_threshold": 0.5, "cat_method": "chisquare", "cat_threshold": 0.5}),
    ],
)
def test_named_stattests_agree(i: int, preset: dict) -> None:
    s = SCENARIOS[i]
    profile = build_profile(s.reference, NUMERIC, CATEGORICAL)
    theirs = evidently_drift(s.reference, s.current, **preset)
    thr = preset.get("threshold")
    stattests = {c: preset["num_method"] for c in NUMERIC} | {c: preset.get("cat_method") for c in CATEGORICAL}
    thresholds = {c: preset.get("num_threshold", thr) for c in NUMERIC} | {
        c: preset.get("cat_threshold", thr) for c in CATEGORICAL
    }
    ours = dataset_drift(
        profile,
        s.current,
        stattests={k: v for k, v in stattests.items() if v},
        thresholds={k: v for k, v in thresholds.items() if v is not None},
    )
    _assert_agree(ours, theirs, s.name)


def test_ks_asymptotic_path_agrees() -> None:
    """Above 10 000 rows scipy's K-S switches to the asymptotic p-value."""
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=800)})
    cur = pd.DataFrame({"x": rng.normal(0.05, 1, 12000)})
    ours = column_drift(build_profile(ref, ["x"], []).columns["x"], cur["x"])
    assert ours.stattest == "ks"
    assert abs(ours.score - stats.ks_2samp(ref["x"], cur["x"])[1]) <= TOL


@pytest.mark.parametrize("side", ["current", "reference"])
def test_all_null_column_fails_like_evidently(side: str) -> None:
    s = SCENARIOS[0]
    ref, cur = s.reference.copy(), s.current.copy()
    (cur if side == "current" else ref)["num_normal"] = np.nan
    (cur if side == "current" else ref)["cat_letters"] = None
    with pytest.raises(ValueError, match="empty column"):
        evidently_drift(ref, cur)
    profile = build_profile(ref, NUMERIC, CATEGORICAL)
    with pytest.raises(EmptyColumnError, match=f"in the {side} dataset"):
        dataset_drift(profile, cur)


@pytest.mark.parametrize("i", [0, 21, 35])
def test_registered_stattest_gives_our_scores_in_evidently(i: int) -> None:
    """``DataDriftPreset(method="kfloop")`` reports the same as the default preset (and our API)."""
    register()
    s = SCENARIOS[i]
    profile = build_profile(s.reference, NUMERIC, CATEGORICAL)
    ours = dataset_drift(profile, s.current)
    for bind in (False, True):
        if bind:
            with bound_profile(profile):
                theirs = evidently_drift(s.reference, s.current, method="kfloop")
        else:
            theirs = evidently_drift(s.reference, s.current, method="kfloop")
        got = {c.column: c for c in ours.columns}
        for col, (method, score, drifted) in theirs.items():
            assert method == "kfloop"
            assert abs(score - got[col].score) <= TOL and drifted == got[col].drifted, (s.name, col)
    named = evidently_drift(s.reference, s.current, num_method="kfloop_ks", cat_method="kfloop_chisquare")
    plain = evidently_drift(s.reference, s.current, num_method="ks", cat_method="chisquare")
    for col, (_, score, drifted) in plain.items():
        assert abs(named[col][1] - score) <= TOL and named[col][2] == drifted, (s.name, col)


def _profiles_equal(a, b) -> None:
    assert a.rows == b.rows and list(a.columns) == list(b.columns)
    for name, col in a.columns.items():
        other = b.columns[name]
        assert (col.name, col.kind, col.rows, col.nulls, col.categories) == (
            other.name,
            other.kind,
            other.rows,
            other.nulls,
            other.categories,
        )
        if col.values is None:
            assert other.values is None
        else:
            assert other.values is not None and other.values.dtype == np.float64
            np.testing.assert_array_equal(col.values, other.values)


@pytest.mark.parametrize("i", [0, 20, 37])
def test_profile_round_trip(i: int) -> None:
    s = SCENARIOS[i]
    profile = build_profile(s.reference, NUMERIC, CATEGORICAL)
    data = profile_to_bytes(profile)
    back = profile_from_bytes(data)
    _profiles_equal(profile, back)
    assert np.all(np.diff(back.columns["num_normal"].values) >= 0)
    assert profile.columns["num_normal"].nulls == int((~np.isfinite(s.reference["num_normal"])).sum())
    with pytest.raises(ValueError, match="read-only"):
        back.columns["num_normal"].values[0] = 1.0  # type: ignore[index]


def test_profile_round_trip_edge_cases() -> None:
    frame = pd.DataFrame({"empty": [np.nan] * 3, "none": [None, None, None], "x": [1.5, -np.inf, 0.0]})
    profile = build_profile(frame, ["empty", "x"], ["none"])
    back = profile_from_bytes(profile_to_bytes(profile))
    _profiles_equal(profile, back)
    assert back.columns["x"].nulls == 1 and back.columns["none"].categories == {}
    empty = build_profile(frame, [], [])
    _profiles_equal(empty, profile_from_bytes(profile_to_bytes(empty)))


def test_profile_rejects_other_files() -> None:
    import io

    import pyarrow as pa

    sink = io.BytesIO()
    table = pa.table({"a": [1]})
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ValueError, match="not a kfloop reference profile"):
        profile_from_bytes(sink.getvalue())


def test_category_keys_merge_int_and_float() -> None:
    """Integer codes read back as floats (a null in the window) still match the reference's categories."""
    ref = pd.DataFrame({"c": [0, 1, 2] * 300})
    cur = pd.DataFrame({"c": [0.0, 1.0, 2.0, np.nan] * 100})
    ours = column_drift(build_profile(ref, [], ["c"]).columns["c"], cur["c"])
    theirs = evidently_drift_single(ref, cur, "c")
    assert ours.stattest == "chisquare" and abs(ours.score - theirs) <= TOL


def evidently_drift_single(ref: pd.DataFrame, cur: pd.DataFrame, col: str) -> float:
    dd = DataDefinition(categorical_columns=[col])
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    (value,) = [m["value"] for m in snap.dict()["metrics"] if m["config"]["type"].endswith("ValueDrift")]
    return float(value)


def test_threaded_columns_give_the_same_result() -> None:
    s = SCENARIOS[5]
    profile = build_profile(s.reference, NUMERIC, CATEGORICAL)
    assert dataset_drift(profile, s.current, workers=3) == dataset_drift(profile, s.current, workers=1)
