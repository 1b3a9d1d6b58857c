"""The two-run workspace every lineage test reads: two source files, each ingested and taken through validate →
features → training set → train by the stages' own functions (so the events are the ones the steps emit), each
run inside its own pipeline run. The first version is evaluated, promoted and deployed; a drift check and a retrain
decision follow. Built once per session (~10 s: the trainer is the real one, one epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kfloop.components.deploy import deploy_champion
from kfloop.components.evaluate import evaluate_and_gate
from kfloop.components.train import train_and_register
from kfloop.config import Config
from kfloop.demo import write_frame
from kfloop.lineage.run import pipeline_parent
from kfloop.monitoring.monitor import run_check
from kfloop.monitoring.retrain import decide
from kfloop.storage import LocalStorage
from tests.feature_repo.harness import Loop, demo_frames, sqlite_backend
from tests.report.workspace import Launcher

MODEL = "fraud-detector"  # the demo config's training.model_name


@dataclass(frozen=True)
class TwoRuns:
    config: Config
    storage: LocalStorage
    sources: tuple[Path, Path]  # file A (the first 60 days), file B (the rest)
    versions: tuple[str, str]  # the model version each run registered
    training_sets: tuple[str, str]
    pipelines: tuple[str, str]  # the pipeline run names the steps ran under


def _one_epoch(data: dict) -> None:
    data["training"]["epochs"] = 1
    data["monitoring"] = {**data["monitoring"], "min_rows": 10}


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    root = tmp_path_factory.mktemp("lineage")
    loop = Loop.create(root / "ws", sqlite_backend(), _one_epoch)
    frames = demo_frames(rows=4000)
    sources, versions, sets, pipelines = [], [], [], []
    for n, frame in enumerate(frames):
        path = root / f"source-{'ab'[n]}.parquet"
        write_frame(frame, path, "parquet")
        pipeline = f"pipeline-{n + 1}"
        with pipeline_parent(pipeline):
            loop.ingest(path)
            loop.validate()
            loop.features()
            sets.append(loop.training_set().run_id)
            card = train_and_register(loop.config, loop.storage, pipeline_run=pipeline)
            if n == 0:
                evaluate_and_gate(loop.config, loop.storage, card["version"])
                deploy_champion(loop.config, loop.storage)
        sources.append(path)
        versions.append(card["version"])
        pipelines.append(pipeline)
    record = run_check(loop.config, loop.storage)  # nothing logged yet: insufficient data, an event all the same
    decide(loop.config, loop.storage, record, Launcher())
    return TwoRuns(loop.config, loop.storage, tuple(sources), tuple(versions), tuple(sets), tuple(pipelines))
