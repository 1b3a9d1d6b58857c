"""Fast drift tests: a window of the inference log against a cached :class:`ReferenceProfile`.

They reproduce Evidently 0.7.23's own tests and its default choice (``DataDriftPreset()`` with no method),
so the scores agree with Evidently's to rounding (the agreement test checks 1e-6) while never touching the
reference frame: numeric tests work from the profile's sorted values (one sort of the window, one ordered
``searchsorted`` into the reference's distinct values, ``bincount``s), categorical tests from category counts.

Evidently's rules, as found in its source:

- choice (``evidently.legacy.calculations.stattests.registry._get_default_stattest``), after NaN/±inf are
  dropped from both sides (``evidently.legacy.calculations.data_drift.get_one_column_drift``); ``n`` is the
  number of distinct values of reference and window together:

  ============================  =========================================  =============================
  reference non-null rows       numeric                                    categorical
  ============================  =========================================  =============================
  ≤ 1000                        n ≤ 2: ``z``; n ≤ 5: ``chisquare``;         n ≤ 2: ``z``; else
                                else ``ks``                                ``chisquare``
  > 1000                        n ≤ 5: ``jensenshannon``; else             ``jensenshannon``
                                ``wasserstein``
  ============================  =========================================  =============================

- thresholds (each ``StatTest.default_threshold``) and the drift rule: ``ks`` p ≤ 0.05, ``chisquare``
  p < 0.05, ``z`` p < 0.05, ``wasserstein`` (normed by the reference std, floored at 0.001) ≥ 0.1,
  ``jensenshannon`` ≥ 0.1 (30-bin default unused: numeric columns with > 20 reference values are binned
  with numpy's Sturges edges over both samples, others by value; ``scipy.spatial.distance.jensenshannon``).
- an empty column (all null) on either side is an error in Evidently; here it raises :class:`EmptyColumnError`.
- dataset drift: share of drifted columns ≥ ``drift_share`` (``get_dataset_drift``).

The K-S p-value reuses scipy's own ``ks_2samp`` p-value code (exact for sizes ≤ 10 000, else asymptotic);
see :func:`ks_pvalue`.

Limits: scores match Evidently's to rounding (~1e-12; sums run in another order), so a score that close to
its threshold may get the other verdict. Categories are compared as text (:func:`profile.category_key`):
``1`` and ``"1"`` count together where Evidently keeps them apart. Text columns and Evidently's other tests
(PSI, K-L, Anderson-Darling, ...) are not reproduced; register them with Evidently if needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from kfloop.errors import EmptyColumnError
from kfloop.monitoring.profile import ColumnProfile, ReferenceProfile, category_counts, finite_values

#: Evidently's default threshold per test (``StatTest.default_threshold``).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "wasserstein": 0.1,
    "chisquare": 0.05,
    "jensenshannon": 0.1,
    "z": 0.05,
}
#: Column kinds Evidently allows when a test is asked for by name (its default choice may go beyond).
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "ks": ("numeric",),
    "wasserstein": ("numeric",),
    "chisquare": ("categorical",),
    "jensenshannon": ("numeric", "categorical"),
    "z": ("categorical",),
}
#: Evidently's display names (what its reports show as the method).
DISPLAY_NAMES: dict[str, str] = {
    "ks": "K-S p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "chisquare": "chi-square p_value",
    "jensenshannon": "Jensen-Shannon distance",
    "z": "Z-test p_value",
}
#: Reference sizes above this switch Evidently from p-value tests to distances.
SMALL_REFERENCE = 1000
#: Windows this long are tested a few columns at a time in threads (below, thread start-up isn't worth it).
PARALLEL_ROWS = 50_000


@dataclass(frozen=True)
class ColumnDrift:
    """One column's test: Evidently's test name, its score (p-value or distance) and verdict."""

    column: str
    stattest: str  # Evidently's name, e.g. "ks", "wasserstein", "chisquare", "jensenshannon", "z"
    score: float  # p-value or distance, exactly as Evidently reports it
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Every column's test, and Evidently's dataset-level verdict."""

    columns: list[ColumnDrift]
    drifted_share: float
    dataset_drift: bool  # Evidently's rule: share of drifted columns >= drift_share


def is_drifted(stattest: str, score: float, threshold: float) -> bool:
    """Evidently's verdict: p-values drift below the threshold (K-S also at it), distances at or above."""
    if stattest == "ks":
        return bool(score <= threshold)
    if stattest in ("chisquare", "z"):
        return bool(score < threshold)
    return bool(score >= threshold)


def default_stattest(kind: str, reference_count: int, distinct: int) -> str:
    """Evidently's default test for a column (``_get_default_stattest``); ``distinct`` over both sides."""
    if reference_count <= SMALL_REFERENCE:
        if kind == "numeric" and distinct > 5:
            return "ks"
        return "chisquare" if distinct > 2 else "z"
    if kind == "numeric" and distinct > 5:
        return "wasserstein"
    return "jensenshannon"


# --- numeric helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Steps:
    """The reference ECDF as steps: distinct sorted values and the count of values ≤ each."""

    unique: np.ndarray
    le: np.ndarray  # int64, count of reference values <= unique[j]

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.le, prepend=0)


def _steps(profile: ColumnProfile) -> _Steps:
    unique, le = profile.ecdf
    return _Steps(unique, le)


def _union_values(steps: _Steps, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of both sides with reference and window counts (for few reference values).

    One equality pass per reference value; only values the reference never had are hashed.
    """
    known = np.zeros(x.size, bool)
    matched = []
    for value in steps.unique.tolist():
        eq = x == value
        matched.append(int(np.count_nonzero(eq)))
        known |= eq
    new = pd.Series(x[~known]).value_counts(sort=False) if sum(matched) < x.size else pd.Series([], dtype=float)
    keys = np.concatenate((steps.unique, new.index.to_numpy(np.float64)))
    ref = np.concatenate((steps.counts, np.zeros(len(new), np.int64)))
    cur = np.concatenate((np.array(matched, np.int64), new.to_numpy(np.int64)))
    order = np.argsort(keys, kind="stable")
    return keys[order], ref[order], cur[order]


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Two-sided two-sample K-S p-value for statistic ``d``: ``scipy.stats.ks_2samp``'s method='auto' path.

    Uses scipy's private ``_attempt_exact_2kssamp`` (exact when both sizes ≤ 10 000) so the p-value is
    scipy's to the last bit; the asymptotic branch is public (``kstwo.sf``).
    """
    from scipy.stats import _stats_py

    if max(n1, n2) <= 10000:
        success, d, prob = _stats_py._attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if success:
            return float(np.clip(prob, 0, 1))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))


def _ks(steps: _Steps, n: int, x: np.ndarray) -> float:
    """K-S statistic from the reference steps and one searchsorted of the window, then scipy's p-value.

    scipy evaluates ``F_ref - F_cur`` (both right-continuous, each ``count / size``) at every point of
    both samples. At reference points that needs ``#cur <= u_j``; between two reference values the
    reference ECDF is flat, so the extreme at window points is ``#cur < u_j`` against ``F_ref(u_{j-1})``.
    """
    m = x.size
    u, le = steps.unique, steps.le
    k = u.size
    x = np.sort(x)  # see _wasserstein
    idx = np.searchsorted(u, x, side="left")  # x in (u[idx-1], u[idx]]; k: beyond the last
    hit = idx < k
    eq = np.zeros(k + 1, np.int64)
    eq[:k] = np.bincount(idx[hit][u[idx[hit]] == x[hit]], minlength=k)
    cnt = np.bincount(idx, minlength=k + 1)
    cur_le = np.cumsum(cnt)  # #cur <= u_j (j < k)
    cur_lt = cur_le - eq  # #cur < u_j; entry k: all m
    at_ref = le / n - cur_le[:k] / m
    inside = cnt - eq > 0  # window points strictly between u_{j-1} and u_j
    ref_before = np.concatenate(([0], le)) / n
    at_cur = ref_before[inside] - cur_lt[inside] / m
    diffs = np.concatenate((at_ref, at_cur))
    min_s = float(np.clip(-diffs.min(), 0, 1))
    max_s = float(diffs.max())
    d = min_s if min_s > max_s else max_s
    return ks_pvalue(d, n, m)


def _wasserstein(steps: _Steps, std: float, x: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance`` ÷ max(std(reference), 0.001), from the profile's steps.

    The window is sorted (numpy's SIMD sort is far cheaper than the cache misses of searching random keys)
    and searched into the reference's distinct values once.

    The integral of |F_ref - F_cur| is split at the reference values. Where F_ref is flat and F_cur stays
    on one side of it, per-bin counts and sums of distances to the bin edge give the integral exactly;
    only bins where F_cur crosses F_ref are integrated point by point (few of them).
    """
    n, m = int(steps.le[-1]), x.size
    u, le = steps.unique, steps.le
    k = u.size
    x = np.sort(x)  # SIMD sort + searchsorted of sorted keys beats a cache-missing searchsorted of random ones
    b = np.searchsorted(u, x, side="right")  # bin b: [u[b-1], u[b]); 0: below u[0]; k: from u[k-1] on
    cnt = np.bincount(b, minlength=k + 1)
    edge = u[np.minimum(b, k - 1)]
    dist = np.bincount(b, weights=np.abs(edge - x), minlength=k + 1)  # Σ|edge - x| per bin
    total = (dist[0] + dist[k]) / m  # the two unbounded tails
    if k > 1:
        length = np.diff(u)  # bins 1..k-1
        c = le[:-1] / n  # F_ref on bin j (j = 1..k-1)
        before = np.cumsum(cnt)[:-1]  # #cur below bin j's left edge, j = 1..k
        s = before[:-1] / m
        e = (before[:-1] + cnt[1:k]) / m
        inner_dist = dist[1:k] / m  # ∫ (F_cur - s) over the bin = Σ (u_j - x) / m
        below = c >= e  # F_cur <= F_ref on the whole bin
        above = c <= s
        total += float(np.sum(((c - s) * length - inner_dist)[below & ~above]))
        total += float(np.sum(((s - c) * length + inner_dist)[above]))
        cross = ~(below | above)
        if cross.any():
            total += _crossing_bins(cross, b, x, u, c, s, m)
    return total / max(std, 0.001)


def _crossing_bins(
    cross: np.ndarray, b: np.ndarray, x: np.ndarray, u: np.ndarray, c: np.ndarray, s: np.ndarray, m: int
) -> float:
    """∫|F_ref - F_cur| over the bins where F_cur crosses the flat F_ref, segment by segment (``x`` sorted)."""
    in_cross = np.zeros(u.size + 1, bool)
    in_cross[1 : u.size] = cross
    pts = x[in_cross[b]]  # x is sorted, so the points come bin by bin, ascending within each
    bins = b[in_cross[b]]
    j = bins - 1  # index into c, s, length (bin j+1 is [u[j], u[j+1]))
    first = np.ones(pts.size, bool)
    first[1:] = bins[1:] != bins[:-1]
    last = np.ones(pts.size, bool)
    last[:-1] = bins[1:] != bins[:-1]
    rank = np.arange(pts.size) - np.maximum.accumulate(np.where(first, np.arange(pts.size), 0))
    level = s[j] + (rank + 1) / m  # F_cur from this point to the next one (or the bin's right edge)
    nxt = np.empty_like(pts)
    nxt[:-1] = pts[1:]
    nxt[last] = u[j[last] + 1]
    total = float(np.sum(np.abs(c[j] - level) * (nxt - pts)))
    # from each crossing bin's left edge to its first point, F_cur is still s
    jf = j[first]
    total += float(np.sum(np.abs(c[jf] - s[jf]) * (pts[first] - u[jf])))
    return total


def _sturges_edges(lo: float, hi: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(both samples, bins="sturges")`` from the range and size alone."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, 2)
    width = (hi - lo) / (np.log2(size) + 1.0)
    bins = int(np.ceil((hi - lo) / width)) if width else 1
    return np.linspace(lo, hi, bins + 1)


def _jensenshannon_numeric(steps: _Steps, values: np.ndarray, x: np.ndarray) -> float:
    """Evidently's ``get_binned_data``: Sturges bins over both samples if > 20 reference values, else by value."""
    n, m = values.size, x.size
    if steps.unique.size > 20:
        lo, hi = min(values[0], x.min()), max(values[-1], x.max())
        edges = _sturges_edges(float(lo), float(hi), n + m)
        cum = np.concatenate(
            (np.searchsorted(values, edges[:-1], "left"), np.searchsorted(values, edges[-1:], "right"))
        )
        ref = np.diff(cum) / n
        cur = np.histogram(x, bins=edges.size - 1, range=(edges[0], edges[-1]))[0] / m
    else:
        _, ref_counts, cur_counts = _union_values(steps, x)
        ref, cur = ref_counts / n, cur_counts / m
    return float(distance.jensenshannon(ref, cur))


# --- tests on counts (categorical, and numeric with few values) ------------------------------------


def _chisquare(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's chi-square: window counts against reference counts scaled to the window's size."""
    k_norm = cur.sum() / ref.sum()
    with np.errstate(divide="ignore", invalid="ignore"):  # a new category: expected 0, p-value 0 (as Evidently)
        return float(stats.chisquare(cur.astype(np.float64), ref * k_norm)[1])


def _z(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's two-proportion Z-test on "first (sorted) value vs the rest"."""
    ref_present, cur_present = np.flatnonzero(ref), np.flatnonzero(cur)
    if ref_present.size == 1 and cur_present.size == 1 and ref_present[0] == cur_present[0]:
        return 1.0
    n1, n2 = int(ref.sum()), int(cur.sum())
    p1 = float(n1 - ref[0]) / n1
    p2 = float(n2 - cur[0]) / n2
    p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _counts_test(stattest: str, ref: np.ndarray, cur: np.ndarray) -> float:
    if stattest == "chisquare":
        return _chisquare(ref, cur)
    if stattest == "z":
        return _z(ref, cur)
    if stattest == "jensenshannon":
        return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))
    raise ValueError(f"stattest {stattest!r} does not apply to counts")


def _category_keys(keys: list[str]) -> list[str]:
    """Sort keys like Evidently sorts raw values: numerically when every key is a number."""
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


# --- public API ------------------------------------------------------------------------------------


def _check_stattest(profile: ColumnProfile, stattest: str) -> None:
    if stattest not in DEFAULT_THRESHOLDS:
        raise ValueError(f"unknown stattest {stattest!r}; known: {', '.join(DEFAULT_THRESHOLDS)}")
    if profile.kind not in ALLOWED_KINDS[stattest]:
        raise ValueError(f"stattest {stattest!r} isn't applicable to {profile.kind} column {profile.name!r}")


def _result(profile: ColumnProfile, stattest: str, score: float, threshold: float | None) -> ColumnDrift:
    thr = DEFAULT_THRESHOLDS[stattest] if threshold is None else float(threshold)
    return ColumnDrift(profile.name, stattest, float(score), thr, is_drifted(stattest, score, thr))


def column_drift(
    profile: ColumnProfile,
    current: pd.Series | np.ndarray,
    stattest: str | None = None,
    threshold: float | None = None,
) -> ColumnDrift:
    """Test one window column against its reference profile; ``None``: Evidently's default choice.

    Raises :class:`EmptyColumnError` when either side has no non-null value (Evidently raises too).
    """
    if stattest is not None:
        _check_stattest(profile, stattest)
    if profile.count == 0:
        raise EmptyColumnError(
            f"An empty column '{profile.name}' was provided for drift calculation in the reference dataset."
        )
    if profile.kind == "numeric":
        return _numeric_drift(profile, finite_values(current, profile.name), stattest, threshold)
    return _categorical_drift(profile, category_counts(current), stattest, threshold)


def _empty_current(profile: ColumnProfile) -> EmptyColumnError:
    return EmptyColumnError(
        f"An empty column '{profile.name}' was provided for drift calculation in the current dataset."
    )


def _numeric_drift(profile: ColumnProfile, x: np.ndarray, stattest: str | None, threshold: float | None) -> ColumnDrift:
    if x.size == 0:
        raise _empty_current(profile)
    values = profile.values
    assert values is not None
    steps = _steps(profile)
    few = _union_values(steps, x) if steps.unique.size <= 5 else None  # Evidently's choice looks at ≤ 5 values
    if stattest is None:
        stattest = default_stattest("numeric", values.size, steps.unique.size if few is None else few[0].size)
    if stattest == "ks":
        score = _ks(steps, values.size, x)
    elif stattest == "wasserstein":
        score = _wasserstein(steps, profile.std, x)
    elif stattest == "jensenshannon":
        score = _jensenshannon_numeric(steps, values, x)
    else:  # chisquare / z: Evidently's default choice for few distinct values
        _, ref, cur = few or _union_values(steps, x)
        score = _counts_test(stattest, ref, cur)
    return _result(profile, stattest, score, threshold)


def _categorical_drift(
    profile: ColumnProfile, counts: Mapping[str, int], stattest: str | None, threshold: float | None
) -> ColumnDrift:
    if not counts:
        raise _empty_current(profile)
    ref_counts = profile.categories or {}
    keys = _category_keys(list(ref_counts.keys() | counts.keys()))
    if stattest is None:
        stattest = default_stattest("categorical", profile.count, len(keys))
    ref = np.array([ref_counts.get(key, 0) for key in keys], np.int64)
    cur = np.array([counts.get(key, 0) for key in keys], np.int64)
    return _result(profile, stattest, _counts_test(stattest, ref, cur), threshold)


def dataset_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    *,
    stattest: str | None = None,
    threshold: float | None = None,
    drift_share: float = 0.5,
    stattests: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    workers: int | None = None,
) -> DriftResult:
    """Test every profiled column of the window; ``stattests``/``thresholds`` override per column.

    ``workers`` threads test columns side by side (numpy's sort, searchsorted and ufuncs release the GIL);
    default: up to 4 (the CPU count) for windows of at least ``PARALLEL_ROWS`` rows, else 1.
    """
    missing = [name for name in profile.columns if name not in current.columns]
    if missing:
        raise ValueError(f"columns of the reference profile missing from the window: {missing}")
    stattests, thresholds = stattests or {}, thresholds or {}

    def one(item: tuple[str, ColumnProfile]) -> ColumnDrift:
        name, col = item
        return column_drift(col, current[name], stattests.get(name, stattest), thresholds.get(name, threshold))

    if workers is None:
        workers = min(4, os.cpu_count() or 1) if len(current) >= PARALLEL_ROWS else 1
    items = list(profile.columns.items())
    if workers <= 1 or len(items) < 2:
        columns = [one(item) for item in items]
    else:
        with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="kfloop-drift") as pool:
            columns = list(pool.map(one, items))
    share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
    return DriftResult(columns, share, bool(columns) and share >= drift_share)
