"""The closed-loop demo's world: periods that do not overlap, a source file that grows by appending (the
history's rows are the same in both versions), traffic drawn from each phase's own days, and a config that
extends the user's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from kfloop.config import load_config
from kfloop.demo.defects import DEMO_DEFECTS, DefectSpec
from kfloop.demo.loop_data import FRESH_DAYS, PHASE_DAYS, build_world, loop_config, write_loop_config, write_source
from tests.conftest import REPO

FRAUD = REPO / "examples" / "fraud" / "kfloop.yaml"


def test_the_demo_defects_have_a_name() -> None:
    assert DefectSpec.parse("demo") == DefectSpec.parse(DEMO_DEFECTS) and DefectSpec.parse("demo").any


def test_world_periods_traffic_and_the_growing_source(tmp_path: Path) -> None:
    world = build_world(9000, seed=3)
    assert world.end - world.drift_at == timedelta(days=FRESH_DAYS)
    ts = world.frame[world.timestamp]
    assert ts.min() >= world.start and ts.max() < world.end
    for phase, lo, hi in (
        ("normal", world.drift_at - timedelta(days=PHASE_DAYS), world.drift_at),
        ("drifted", world.drift_at, world.drift_at + timedelta(days=PHASE_DAYS)),
        ("settled", world.end - timedelta(days=PHASE_DAYS), world.end),
    ):
        rows = world.traffic(phase, 100, seed=1)
        assert len(rows) == 100 and rows[world.timestamp].between(lo, hi, inclusive="left").all(), phase
        assert rows.equals(world.traffic(phase, 100, seed=1))  # seeded
    with pytest.raises(ValueError, match="fewer than"):
        world.traffic("normal", len(world.frame), seed=1)

    spec = DefectSpec.parse("demo")
    before, after = tmp_path / "a.csv", tmp_path / "b.csv"
    n_before = write_source(world, False, before, spec, seed=5)
    n_after = write_source(world, True, after, spec, seed=5)
    assert n_after > n_before
    assert after.read_text().startswith(before.read_text())  # the history's bytes, then the fresh events
    history = pd.read_csv(before)
    assert (
        len(history) == n_before
        and (
            pd.to_datetime(history["event_timestamp"], utc=True, errors="coerce").dropna()
            < pd.Timestamp(world.drift_at)
        ).all()
    )


def test_the_loop_config_extends_the_users_in_its_own_workspace(tmp_path: Path) -> None:
    base = load_config(FRAUD)
    path = tmp_path / "loop" / "kfloop.yaml"
    write_loop_config(path, loop_config(FRAUD, tmp_path / "loop", tmp_path / "loop" / "src.csv", base, 700))
    config = load_config(path)
    assert config.storage.root == str((tmp_path / "loop").resolve())
    assert config.source.uri == str((tmp_path / "loop" / "src.csv").resolve())
    assert config.monitoring.window.rows == 700 and config.monitoring.retrain.enabled
    assert config.monitoring.features == base.features.request_features
    assert config.training == base.training and config.features.views == base.features.views
