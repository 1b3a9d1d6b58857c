"""Drift benchmark: a 1M-row window x 20 columns (15 numeric, 5 categorical) against a 1M-row reference.

- ours:  ``kfloop.monitoring.drift.dataset_drift`` with the reference profile already built (what a check
         does with the profile stored beside the model version); a second "ours" case also reads the
         profile from its stored bytes first.
- peer:  Evidently's default ``DataDriftPreset()`` on the raw window and reference frames (``Report.run``
         with an explicit ``DataDefinition``), what a user would run instead.
- floor: numpy, the least work the same statistics need: per numeric column one ``searchsorted`` of the
         window into the sorted reference plus a ``bincount``; per categorical column ``pd.factorize`` plus a
         ``bincount`` (numpy alone has no hash-based count of strings). A second floor sorts the window
         first, so ``searchsorted`` walks the reference in order (numpy's SIMD sort makes that cheaper
         than the cache misses of searching random keys).

Every case is checked: ours and Evidently must name the same drifted columns (run once in ``build``).

Aims (from the issue): ours ≥ 100x Evidently's default (≥ 20x at least), ≤ 3x the floor's time (≥ 33 %
of its throughput), peak memory ≤ 1.5x the window's arrays (``params["window_array_bytes"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import Benchmark, Case
from kfloop.monitoring.drift import DriftResult, dataset_drift
from kfloop.monitoring.profile import ReferenceProfile, build_profile, profile_from_bytes, profile_to_bytes

ROWS = 1_000_000
SEED = 42
NUMERIC = [f"num_{i:02d}" for i in range(15)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
#: Category vocabularies: a binary flag, small and mid-sized sets (strings, as read from a log).
VOCABULARIES = [
    np.array(["no", "yes"], dtype=object),
    np.array(["web", "app", "pos", "atm"], dtype=object),
    np.array([f"seg-{i}" for i in range(8)], dtype=object),
    np.array([f"{r}-{i:02d}" for r in ("EU", "US", "AP", "LA") for i in range(25)], dtype=object),
    np.array(["USD", "EUR", "GBP", "JPY", "CHF", "CAD"], dtype=object),
]


def _numeric(rng: np.random.Generator, i: int, rows: int, drift: bool) -> np.ndarray:
    """Column i: normal, lognormal, Poisson counts or a 3-valued code; some shift in the window."""
    shift = 0.15 if drift else 0.0
    kind = i % 4
    if kind == 0:
        return rng.normal(10 * i + shift, 1.0 + shift, rows)
    if kind == 1:
        return rng.lognormal(1.0 + shift, 0.6, rows)
    if kind == 2:
        return rng.poisson(20 + 10 * shift, rows).astype(np.float64)
    return rng.choice(np.array([0.0, 1.0, 2.0]), rows, p=[0.5 - shift / 2, 0.3, 0.2 + shift / 2])


def _categorical(rng: np.random.Generator, i: int, rows: int, drift: bool) -> np.ndarray:
    vocab = VOCABULARIES[i]
    weights = np.linspace(1.0, 2.0 if drift else 1.5, vocab.size)
    return rng.choice(vocab, rows, p=weights / weights.sum())


def make_frames(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and window (same size); a third of the window's columns shifted, 1 % nulls in each."""
    rng = np.random.default_rng(seed)
    frames = []
    for window in (False, True):
        data: dict[str, Any] = {}
        for i, name in enumerate(NUMERIC):
            values = _numeric(rng, i, rows, drift=window and i % 3 == 0)
            values[rng.random(rows) < 0.01] = np.nan
            data[name] = values
        for i, name in enumerate(CATEGORICAL):
            values = _categorical(rng, i, rows, drift=window and i % 3 == 0)
            values[rng.random(rows) < 0.01] = None
            data[name] = values
        frames.append(pd.DataFrame(data))
    return frames[0], frames[1]


def window_array_bytes(frame: pd.DataFrame) -> int:
    """The window's column arrays (object columns count their pointers, not the shared strings)."""
    return int(sum(frame[c].to_numpy().nbytes for c in frame.columns))


# --- the cases ------------------------------------------------------------------------------------


def run_ours(profile: ReferenceProfile, window: pd.DataFrame) -> DriftResult:
    return dataset_drift(profile, window)


def run_peer(reference: pd.DataFrame, window: pd.DataFrame) -> dict[str, bool]:
    """Evidently's default preset on the raw frames; returns its per-column drift verdicts."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(window, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    prefix = "Value Drift for column "
    return {
        t["name"].removeprefix(prefix): t["status"].name == "FAIL"
        for t in snapshot.dict()["tests"]
        if t["name"].startswith(prefix)
    }


def run_floor(sorted_reference: dict[str, np.ndarray], window: pd.DataFrame, sort_first: bool = False) -> int:
    """Per numeric column searchsorted into the sorted reference + bincount; per categorical factorize + bincount."""
    total = 0
    for name, ref in sorted_reference.items():
        x = window[name].to_numpy()
        x = x[np.isfinite(x)]
        if sort_first:
            x = np.sort(x)
        total += int(np.bincount(np.searchsorted(ref, x), minlength=ref.size + 1)[-1])
    for name in CATEGORICAL:
        codes, _ = pd.factorize(window[name])
        total += int(np.bincount(codes[codes >= 0]).size)
    return total


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Generate both frames and the reference profile (untimed), check agreement with Evidently once."""
    import evidently

    del data_dir  # generated in memory: seconds, no cache needed
    n = rows or ROWS
    reference, window = make_frames(n, seed)
    profile = build_profile(reference, NUMERIC, CATEGORICAL)
    stored = profile_to_bytes(profile)
    sorted_reference = {name: profile.columns[name].values for name in NUMERIC}
    result = run_ours(profile, window)
    drifted = sorted(c.column for c in result.columns if c.drifted)
    peer_drifted = sorted(c for c, d in run_peer(reference, window).items() if d)
    if drifted != peer_drifted:
        raise AssertionError(f"drifted columns differ: ours {drifted}, Evidently {peer_drifted}")

    def ours(_: None) -> None:
        run_ours(profile, window)

    def ours_stored(_: None) -> None:
        run_ours(profile_from_bytes(stored), window)

    def peer(_: None) -> None:
        run_peer(reference, window)

    def floor(_: None) -> None:
        run_floor(sorted_reference, window)

    def floor_sorted(_: None) -> None:
        run_floor(sorted_reference, window, sort_first=True)

    cases = [
        Case("kfloop dataset_drift (cached profile)", "ours", ours),
        Case("kfloop profile_from_bytes + dataset_drift", "ours", ours_stored),
        Case("evidently DataDriftPreset()", "peer", peer),
        Case("numpy searchsorted + bincount", "floor", floor),
        Case("numpy sort + searchsorted + bincount", "floor", floor_sorted),
    ]
    params = {
        "seed": seed,
        "window_rows": n,
        "reference_rows": n,
        "numeric_columns": len(NUMERIC),
        "categorical_columns": len(CATEGORICAL),
        "window_array_bytes": window_array_bytes(window),
        "window_deep_bytes": int(window.memory_usage(deep=True).sum()),
        "profile_bytes": len(stored),
        "tests": {c.column: c.stattest for c in result.columns},
        "drifted_columns": drifted,
        "evidently": evidently.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    return Benchmark(
        "drift",
        "1 window x 20 columns (15 numeric, 5 categorical) vs a same-size reference",
        cases,
        rows=n,
        aims={"peer": 100.0, "floor": 1 / 3},
        params=params,
    )
