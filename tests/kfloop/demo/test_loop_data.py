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
from kfloop.demo.loop_data import (
    FRESH_DAYS,
    MARKER,
    PHASE_DAYS,
    build_world,
    check_base,
    loop_config,
    prepare_workdir,
    write_loop_config,
    write_source,
)
from kfloop.errors import ConfigError
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


def test_the_workdir_is_emptied_only_when_it_is_the_storys_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = load_config(FRAUD)
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "story"
    prepare_workdir(mine, FRAUD, base)  # new: made, and marked
    (mine / "old-run.txt").write_text("x")
    prepare_workdir(mine, FRAUD, base)  # the story's own: emptied
    assert sorted(p.name for p in mine.iterdir()) == [MARKER]

    theirs = tmp_path / "precious"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not made by kfloop loop"):
        prepare_workdir(theirs, FRAUD, base)
    assert (theirs / "thesis.tex").read_text() == "years of work"
    guarded_dirs = ((tmp_path, "workspace|current directory"), (FRAUD.parent, "the config"), (Path.home(), "home"))
    for guarded, what in guarded_dirs:
        with pytest.raises(ConfigError, match=what):
            prepare_workdir(guarded, FRAUD, base)
    assert FRAUD.exists()


def test_only_a_config_of_the_fraud_demos_columns_tells_the_story() -> None:
    check_base(load_config(FRAUD))
    flights = load_config(REPO / "examples" / "flights" / "kfloop.yaml")
    with pytest.raises(ConfigError, match="binary model of is_fraud"):
        check_base(flights)
