"""The drift benchmark at a tiny size: it builds (checking ours against Evidently), and every case runs once.

The full 1M-row run is by hand (``python -m benchmarks drift``); this keeps the benchmark honest in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a plain folder at the repo root (see test_harness.py)

from benchmarks.drift import CATEGORICAL, NUMERIC, build, make_frames, window_array_bytes  # noqa: E402
from benchmarks.harness import run_benchmark  # noqa: E402


def test_frames_have_the_issue_shape() -> None:
    reference, window = make_frames(500, seed=1)
    assert list(window.columns) == [*NUMERIC, *CATEGORICAL] and len(NUMERIC) == 15 and len(CATEGORICAL) == 5
    assert len(reference) == len(window) == 500
    assert window_array_bytes(window) == 20 * 500 * 8


def test_every_case_runs_and_ratios_are_filled() -> None:
    bench = build(rows=3000)
    assert {c.role for c in bench.cases} == {"ours", "peer", "floor"}
    report = run_benchmark(bench, repeat=1)
    assert all(len(r.times) == 1 for r in report.results)
    ours = next(r for r in report.results if r.role == "ours")
    assert ours.vs_peer is not None and ours.vs_peer > 1
