"""The closed-loop demo's world: one seeded frame of card transactions that drifts on a known day, cut into
the history v1 learns from, the traffic replayed to the served model, and the labelled events that land
later; and the story's own config, which ``extends`` the user's.

Why one frame: the customers and merchants of the replayed traffic are the ones whose features the online
store holds, and the events the retrain learns from are the drifted traffic's own period.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kfloop.config import Config
from kfloop.demo.defects import DefectSpec, inject_defects
from kfloop.demo.generator import DEFAULT_START, DemoSpec, DriftSpec, generate
from kfloop.demo.writer import write_frame
from kfloop.errors import ConfigError

#: Days of history before the drift (v1's data) and of drifted events after it (what the retrain learns).
HISTORY_DAYS = 90
FRESH_DAYS = 21
#: What changes at the drift (kfloop demo-data --drift), and in words.
DRIFT = "amounts=2.5,categories,fraud"
DRIFT_TEXT = "amounts x2.5, merchant-category mix, fraud pattern"
#: Each replayed phase is drawn from the last days of its period (unseen by the model that scores it).
PHASE_DAYS = 3
#: The events a model trains on: the newest ones, so a retrain learns (and profiles) the drifted traffic.
TRAINING_WINDOW = f"{FRESH_DAYS}d"
#: The replayed phases, in the story's order.
PHASES = ("normal", "drifted", "settled")
#: The file that marks a directory as a story's workspace: only such a directory (or an empty one) is emptied.
MARKER = ".kfloop-loop"


@dataclass(frozen=True)
class LoopWorld:
    """The story's frame (clean, sorted by event time) and where its periods begin and end."""

    frame: pd.DataFrame
    start: datetime
    drift_at: datetime
    end: datetime
    timestamp: str

    def between(self, lo: datetime, hi: datetime) -> pd.DataFrame:
        """The events in ``[lo, hi)``."""
        ts = self.frame[self.timestamp]
        return self.frame[(ts >= lo) & (ts < hi)]

    def traffic(self, phase: str, rows: int, seed: int) -> pd.DataFrame:
        """``rows`` seeded requests of a phase: ``normal`` (the last days before the drift), ``drifted`` (the
        first days after it) or ``settled`` (the last days of the fresh period, after the retrain's split)."""
        span = timedelta(days=PHASE_DAYS)
        lo, hi = {
            "normal": (self.drift_at - span, self.drift_at),
            "drifted": (self.drift_at, self.drift_at + span),
            "settled": (self.end - span, self.end),
        }[phase]
        pool = self.between(lo, hi)
        if len(pool) < rows:
            raise ValueError(
                f"{phase} traffic: {len(pool):,} events in {lo:%Y-%m-%d} … {hi:%Y-%m-%d}, fewer than {rows:,} "
                "(more --rows, or fewer --phase-rows)"
            )
        return pool.sample(n=rows, random_state=seed).sort_values(self.timestamp, kind="stable")


def build_world(rows: int, seed: int) -> LoopWorld:
    """``rows`` events over the history and, at the same rate, the fresh days after the drift."""
    days = HISTORY_DAYS + FRESH_DAYS
    total = rows * days // HISTORY_DAYS
    drift_at = DEFAULT_START + timedelta(days=HISTORY_DAYS)
    drift = DriftSpec.parse(f"{DRIFT}@{drift_at.date().isoformat()}")
    frame = generate(DemoSpec(rows=total, seed=seed, days=days, drift=drift)).frame
    return LoopWorld(frame, DEFAULT_START, drift_at, DEFAULT_START + timedelta(days=days), "event_timestamp")


def write_source(world: LoopWorld, fresh: bool, path: Path, defects: DefectSpec, seed: int) -> int:
    """The source file before the drift (the history) or after the fresh events landed (history + fresh), with
    the demo's defects (so the contract has rows to quarantine), drawn per period: the history's bytes are the
    same in both files, as a file that grows by appending. Written atomically; returns the rows written."""
    periods = [(world.start, world.drift_at), *([(world.drift_at, world.end)] if fresh else [])]
    parts = [
        inject_defects(world.between(lo, hi), defects, np.random.default_rng(seed + i))[0]
        for i, (lo, hi) in enumerate(periods)
    ]
    events = pd.concat(parts, ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_frame(events, path, "csv")
    return len(events)


def check_base(base: Config) -> None:
    """The story replays the fraud demo's world: the user's config must read its columns (any contract,
    features and model settings are the user's own)."""
    from kfloop.demo.generator import COLUMNS

    src = base.source
    if base.storage.type != "local":
        raise ConfigError("kfloop loop runs on a local workspace (storage.type: local)")
    if base.training.task != "binary" or src.label_column != "is_fraud":
        raise ConfigError("kfloop loop replays the fraud demo's world: it needs a binary model of is_fraud")
    declared = {c: t.value for c, t in src.columns.items()}
    wrong = sorted(c for c, t in COLUMNS.items() if declared.get(c) != t)
    used = {*src.entity_keys, src.timestamp_column, *base.features.request_features}
    if wrong or not used <= set(COLUMNS):
        raise ConfigError(
            "kfloop loop replays the fraud demo's world: source.columns must declare "
            + ", ".join(f"{c}: {COLUMNS[c]}" for c in wrong or COLUMNS)
            + " and the keys, time and request features must be among them (as examples/fraud/kfloop.yaml)"
        )


def prepare_workdir(workdir: Path, base_path: Path, base: Config) -> None:
    """Empty ``workdir`` for a new story, but only a directory that is empty or a story's own (it holds
    :data:`MARKER`), and never one holding the base config, the base workspace, the current directory or home."""
    where = workdir.resolve()
    guarded = {
        "the config": base_path.resolve(),
        "the config's workspace": Path(base.storage.root).resolve(),
        "the current directory": Path.cwd().resolve(),
        "your home directory": Path.home().resolve(),
    }
    for what, path in guarded.items():
        if path == where or where in path.parents:
            raise ConfigError(f"--workdir {workdir} holds {what} ({path}): kfloop loop empties its workdir")
    if where.exists() and any(where.iterdir()) and not (where / MARKER).exists():
        raise ConfigError(
            f"--workdir {workdir} is not empty and was not made by kfloop loop (no {MARKER}): it empties its "
            "workdir, so give it a new or empty directory"
        )
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    (where / MARKER).write_text("the workspace of `kfloop loop`: emptied by the next run\n")


def loop_config(base: Path, workdir: Path, source: Path, base_config: Config, phase_rows: int) -> dict:
    """The story's config: the user's (``extends``) in a workspace of its own, trained on the newest
    ``TRAINING_WINDOW`` of events, checked one replayed phase at a time (the window is a phase's rows) on the
    request features and the prediction. Why not the stored features: a replay sends past events at one
    instant against an online store that already holds them (and the events after them), so their stored
    features are not what a live request would have met; a deployment checks every input. Nothing of the
    story leaves its workspace: an embedded online store and registry, no webhooks, the log in the workspace."""
    return {
        "extends": str(base.resolve()),
        "storage": {"type": "local", "root": str(workdir.resolve())},
        "source": {"uri": str(source.resolve()), "format": "csv"},
        "features": {"training_window": TRAINING_WINDOW, "online_store": {"type": "sqlite"}, "registry": None},
        "monitoring": {
            "window": {"rows": phase_rows, "duration": None},
            "min_rows": min(base_config.monitoring.min_rows, phase_rows),
            "features": list(base_config.features.request_features),
            "retrain": {"enabled": True, "run_on": "local"},
        },
        "serving": {"inference_log": {"enabled": True, "sink_url": None, "flush_seconds": 1}},
        "alerts": {"webhooks": []},
    }


def write_loop_config(path: Path, body: dict) -> None:
    """The story's config file, YAML, with a header saying what it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# written by `kfloop loop`: the closed-loop demo's config (the user's, in a workspace of its own)\n"
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
