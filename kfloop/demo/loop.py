"""The whole loop on one machine, as a timeline: v1 trained and served, normal traffic (no drift, no
retrain), drifted traffic (drift within one window, one retrain however many checks see it), v2 judged
on the new data, promoted and hot-switched in, and the drift cleared against v2's reference.

Every step is the real one a deployment runs: ``kfloop run`` (kfp.local) for each training run, a
``kfloop serve`` process scoring over V2 REST and logging, ``kfloop monitor check`` 's core for each
check and the audited retrain decision with the detached local launcher. What the demo adds is the world
(:mod:`kfloop.demo.loop_data`) and the order of events; the outcome of each step is read back from the
workspace (verdict records, audit trail, gate decisions), never assumed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kfloop import layout
from kfloop.config import load_config
from kfloop.demo.defects import DefectSpec
from kfloop.demo.loop_data import (
    DRIFT_TEXT,
    PHASES,
    LoopWorld,
    build_world,
    check_base,
    loop_config,
    prepare_workdir,
    write_loop_config,
    write_source,
)
from kfloop.errors import KfloopError
from kfloop.monitoring.check import DRIFT, NO_DRIFT
from kfloop.monitoring.launch import LocalLauncher
from kfloop.monitoring.monitor import run_check
from kfloop.monitoring.retrain import RETRAIN, decide, read_audit
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient
from kfloop.serving.local_server import running_server
from kfloop.serving.replay import logged_rows, replay, request_rows, wait_logged, wait_serving
from kfloop.storage import Storage, open_storage

Say = Callable[[str, str], None]


@dataclass
class LoopOutcome:
    """What happened, step by step, and whether each thing the loop promises held."""

    workdir: Path
    config_path: Path
    expectations: list[tuple[str, bool]] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def closed(self) -> bool:
        return bool(self.expectations) and all(ok for _, ok in self.expectations)

    def expect(self, claim: str, ok: bool) -> bool:
        self.expectations.append((claim, ok))
        return ok


def _decision(storage: Storage, model: str, version: str) -> dict:
    return json.loads(storage.read_text(layout.decision_key(model, version)))


def _metric_text(metrics: dict, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {metrics[n]:.4f}" for n in names if isinstance(metrics.get(n), int | float))


@dataclass(frozen=True)
class _Settings:
    """What the caller chose for the story: sizes, seed, the source's defects, the run time limit."""

    phase_rows: int
    seed: int
    defects: DefectSpec
    run_timeout: float


class _Story:
    """One run of the loop: the world, the story's config, workspace and source file, and the timeline."""

    def __init__(self, config_path: Path, world: LoopWorld, source: Path, settings: _Settings, say: Say) -> None:
        self.config_path, self.workdir, self.say = config_path, config_path.parent, say
        self.world, self.source, self.settings = world, source, settings
        self.config = load_config(config_path)
        self.storage = open_storage(self.config.storage)
        self.model = self.config.training.model_name
        self.registry = ModelRegistry(self.storage, self.model)
        self.launcher = LocalLauncher(config_path)

    def train(self, run_name: str) -> str:
        """A pipeline run (``kfloop run``, waited for); the version it registered."""
        self.launcher.start(self.config, run_name)
        self.launcher.join(run_name, self.settings.run_timeout)
        return self.newest_version(run_name)

    def traffic(self, phase: str) -> list[dict]:
        """A phase's requests, as an application sends them."""
        return request_rows(self.config, self.world.traffic(phase, self.settings.phase_rows, self.settings.seed))

    def land(self, fresh: bool) -> int:
        """Write the source file as it stands before the drift, or once the fresh events landed."""
        return write_source(self.world, fresh, self.source, self.settings.defects, self.settings.seed)

    def newest_version(self, run_name: str, before: str | None = None) -> str:
        """The version ``run_name`` registered: the newest, which must be newer than ``before``."""
        versions = self.registry.list()
        if not versions or versions[-1].version == before:
            raise KfloopError(f"{run_name}: the pipeline registered no new model version (see its log)")
        return versions[-1].version

    def phase(self, client: ServingClient, name: str, rows: list[dict]) -> dict:
        """Replay ``rows``, wait for the log, check; the verdict record (stored, as a scheduled check's)."""
        before = logged_rows(self.config, self.storage)
        sent = replay(client, rows)
        wait_logged(self.config, self.storage, before + sent.rows)
        versions = ", ".join(f"{v} {n:,}" for v, n in sent.versions.items())
        self.say(
            "traffic", f"{sent.rows:,} {name} requests replayed over V2 REST in {sent.requests} batches ({versions})"
        )
        record = run_check(self.config, self.storage)
        drift = record["drift"]
        drifted = [c["column"] for c in drift["drifted"]]
        if drift["prediction"] and drift["prediction"]["drifted"]:
            drifted.append("prediction")
        share = f"share {drift['share']:.2f}" if drift.get("share") is not None else drift.get("reason", "")
        self.say(
            "check",
            f"{record['model_version']}: {record['verdict']} ({share}; {record['window']['rows']:,} rows"
            + (f"; drifted: {', '.join(drifted)}" if drifted else "")
            + ")",
        )
        return record

    def refresh(self) -> None:
        """What the scheduled materialization does when events land: ingest, validate, compute the new
        feature rows and write them online, so served requests meet the features of their own period."""
        from kfloop.components.features import compute_features
        from kfloop.components.ingest import ingest
        from kfloop.components.materialize import materialize
        from kfloop.components.validate import validate

        got = ingest(self.config, self.storage)
        checked = validate(self.config, self.storage)
        updates = compute_features(self.config, self.storage)
        written = materialize(self.config, self.storage, os.environ)
        added = sum(u.rows_added for u in updates)
        online = sum(m.rows_written for m in written)
        gate = "passed" if checked.report.gate_passed else "FAILED"
        self.say(
            "features",
            f"ingested +{got.rows_written:,} rows ({got.rows_quarantined:,} quarantined), quality gate {gate}, "
            f"+{added:,} feature rows, {online:,} entity rows written online (the scheduled materialization)",
        )

    def decide(self, record: dict) -> dict:
        audit = decide(self.config, self.storage, record, self.launcher, source="loop")
        self.say("retrain", f"{audit['decision']}: {audit['reason']}")
        return audit


def run_loop(
    base_config: Path,
    workdir: Path,
    *,
    rows: int,
    phase_rows: int,
    seed: int,
    defects: DefectSpec,
    environ: Mapping[str, str],
    say: Say,
    run_timeout: float = 900.0,
) -> LoopOutcome:
    """Run the story in ``workdir`` (emptied first: the story's own workspace); returns what held."""
    t0 = time.monotonic()

    def timed(stage: str, text: str) -> None:
        say(f"{time.monotonic() - t0:6.1f}s  {stage:<9}", text)

    base = load_config(base_config)
    check_base(base)
    world = build_world(rows, seed)
    for phase in PHASES:  # enough events for every phase, before anything is deleted or trained
        world.traffic(phase, phase_rows, seed)
    prepare_workdir(workdir, base_config, base)
    config_path = workdir / "kfloop.yaml"
    source = workdir / "source" / "transactions.csv"
    write_loop_config(config_path, loop_config(base_config, workdir, source, base, phase_rows))
    outcome = LoopOutcome(workdir, config_path)
    story = _Story(config_path, world, source, _Settings(phase_rows, seed, defects, run_timeout), timed)
    n = story.land(fresh=False)
    timed(
        "data",
        f"{n:,} events {world.start:%Y-%m-%d} … {world.drift_at:%Y-%m-%d} → {source}"
        + (" (with defects)" if defects.any else "")
        + f"; the world drifts from {world.drift_at:%Y-%m-%d} ({DRIFT_TEXT}); checks test the request features "
        "and the prediction (replayed events meet a store that already holds them)",
    )
    try:
        _story(story, outcome, environ)
    finally:
        story.launcher.stop_all()  # a run still going (an error, Ctrl-C) never outlives the story
    outcome.seconds = time.monotonic() - t0
    return outcome


def _story(story: _Story, outcome: LoopOutcome, environ: Mapping[str, str]) -> None:
    """The story once its workspace and world are ready."""
    timed = story.say
    v1 = story.train("initial")
    first = _decision(story.storage, story.model, v1)
    timed(
        "pipeline",
        f"{v1} trained on the newest {story.config.features.training_window} of events: "
        f"{_metric_text(first['candidate'], ('roc_auc', 'pr_auc'))} → "
        + ("champion" if first["promoted"] else f"refused ({'; '.join(first['reasons'])})"),
    )
    if not outcome.expect(f"{v1} is trained and becomes champion", bool(first["promoted"])):
        return
    environ = {**environ, "KFLOOP_SERVING_AS_OF": story.world.end.isoformat()}  # the replay's clock: the world's end
    with running_server(story.config, story.config_path, environ, log_path=story.workdir / "serve.log") as server:
        timed("serve", f"kfloop serve ready in {server.startup_s:.1f} s at {server.client.http_base}, champion {v1}")
        _served(story, server.client, outcome, v1)


def _served(story: _Story, client: ServingClient, outcome: LoopOutcome, v1: str) -> None:
    """The phases while the server runs: normal, drifted (the retrain), settled on v2."""
    timed = story.say
    normal = story.phase(client, "normal", story.traffic("normal"))
    audit = story.decide(normal)
    outcome.checks.append(normal)
    outcome.expect(
        "normal traffic: no drift, no retrain", normal["verdict"] == NO_DRIFT and audit["decision"] != RETRAIN
    )

    n = story.land(fresh=True)
    timed("data", f"the events up to {story.world.end:%Y-%m-%d}, labelled, land in the source ({n:,} events)")
    story.refresh()
    drifted = story.phase(client, "drifted", story.traffic("drifted"))
    outcome.checks.append(drifted)
    started = story.decide(drifted)
    again = story.decide(run_check(story.config, story.storage))  # the next scheduled check, same episode
    retrains = [a for a in read_audit(story.storage) if a["decision"] == RETRAIN]
    outcome.expect(
        "drifted traffic: drift within one window, one retrain for the episode",
        drifted["verdict"] == DRIFT
        and started["decision"] == RETRAIN
        and again["decision"] != RETRAIN
        and len(retrains) == 1,
    )
    if started["decision"] != RETRAIN:
        return
    story.launcher.join(started["run_id"], story.settings.run_timeout)
    v2 = story.newest_version(started["run_id"], before=v1)
    judged = _decision(story.storage, story.model, v2)
    metric = story.config.training.gate.compared(story.config.training.task)
    cand, champ = judged["candidate"], judged.get("champion") or {}
    timed(
        "pipeline",
        f"{v2} trained ({story.config.features.training_window} window, drifted events); on the new test split "
        f"({judged['test_split']['rows']:,} rows) {metric} {v2} {cand[metric]:.4f} vs {v1} "
        f"{champ.get(metric, float('nan')):.4f} → "
        + ("promoted" if judged["promoted"] else "refused")
        + f" ({'; '.join(judged['reasons'])})",
    )
    better = judged["promoted"] and cand[metric] > champ.get(metric, float("inf"))
    outcome.expect(f"{v2} beats {v1} on the new data and is promoted", bool(better))
    if not judged["promoted"]:
        return
    settled_rows = story.traffic("settled")
    reload = story.config.serving
    waited = wait_serving(client, settled_rows[0], v2, timeout=30 + 2 * reload.reload_max_seconds)
    timed("serve", f"hot switch: the running server scores with {v2} (waited {waited:.1f} s for it)")
    settled = story.phase(client, "settled (drifted world)", settled_rows)
    outcome.checks.append(settled)
    story.decide(settled)
    outcome.expect(
        f"{v2} is served and the drift clears against its reference",
        settled["model_version"] == v2 and settled["verdict"] == NO_DRIFT,
    )
