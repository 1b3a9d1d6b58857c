"""The training-set benchmark at a tiny size: every case runs once and answers the floor's frame, and the pair
count that decides whether Feast's join runs is exact.

The 1M-row run is by hand (``make bench NAME=training_set``); this keeps the benchmark honest in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a plain folder at the repo root (see test_harness.py)

from benchmarks.harness import run_benchmark  # noqa: E402
from benchmarks.training_set import (  # noqa: E402
    ALL_VIEWS,
    FEATURE_TIMESTAMP,
    KEYS_ENV,
    PEER_PAIRS_ENV,
    TTLS,
    build,
    entity_frame,
    generate,
    join_pairs,
)


def test_join_pairs_counts_what_a_range_join_would_pair(tmp_path: Path) -> None:
    data = generate(400, 3, tmp_path)
    entities = entity_frame(data, ALL_VIEWS)
    for ttl in TTLS.values():
        brute = 0
        for v in ALL_VIEWS:
            events = entity_frame(data, [v])  # events sit at the label times: compare with the raw timestamps
            ev_ts = events["label_timestamp"].to_numpy()
            ev_key = events[v.key].to_numpy()
            for key, at in zip(entities[v.key], entities[FEATURE_TIMESTAMP].to_numpy(), strict=True):
                brute += int(np.sum((ev_key == key) & (ev_ts <= at) & (ev_ts >= at - np.timedelta64(ttl))))
        assert join_pairs(entities, data, ALL_VIEWS, ttl) == brute > 0


def test_every_case_runs_and_answers_the_floors_frame(tmp_path: Path) -> None:
    bench = build(rows=2000, data_dir=tmp_path)
    assert sorted(c.role for c in bench.cases) == ["floor", "floor", "ours", "ours", "peer", "peer"]
    report = run_benchmark(bench, repeat=1)  # each teardown compares the frame with the floor's
    assert all(len(r.times) == 1 for r in report.results)


def test_feasts_join_is_skipped_past_the_pair_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEER_PAIRS_ENV, "1000")
    monkeypatch.setenv(KEYS_ENV, "10")
    bench = build(rows=2000, data_dir=tmp_path)
    assert [c.role for c in bench.cases] == ["ours", "ours", "floor", "floor"]
    assert bench.params["peer_skipped_ttls"] == sorted(TTLS) and list(bench.params["views"]) == ["region_stats"]
