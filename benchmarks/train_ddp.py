"""Distributed training benchmark: the train step with ``training.workers: 2`` (PyTorch DDP, two local processes
under torchrun, gloo) against one process, on the same training set.

- ours: ``train_and_register`` with workers 2: torchrun starts two ``python -m kfloop.components.train``
        processes; each trains on its half of every batch, rank 0 exports and registers.
- peer: the same call with workers 1 (what a step does by default: trains in its own process), and one
        process started the way ours starts its two (torchrun, ``--nproc-per-node=1``), which isolates what the
        launch costs (a fresh interpreter importing kfloop and torch) from what a second process gains.

Every case is the whole step: read the splits, fit, calibrate and threshold, export, write the reference profile,
register. The registry is emptied before each run (untimed), so the model identity never turns a run into a
reuse. rows/s = train rows x epochs / seconds; after the table each case's last model is scored: validation
metrics from its card, test ROC AUC of the registered model reloaded from the registry.

Data: the train benchmark's demo training set (``benchmarks.train``: point-in-time joined, cached), split 70/15/15
by time, written as a training set of a local workspace under the data folder. On a 2-core machine the two
processes share the cores with everything else: the ratio says what a second process buys here, not on a
cluster with a node per worker.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import shutil
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from benchmarks.train import CONFIG_PATH, SEED, cached_training_set
from kfloop import layout
from kfloop.components.train import train_and_register, training_identity
from kfloop.components.training_set import TrainingSet, service_version
from kfloop.config import Config, config_to_json, load_config, parse_config
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage, open_storage
from kfloop.training import launch
from kfloop.training.trainer import load_exported

ROWS = 1_000_000
EPOCHS = 2
WORKERS = 2
TRAIN_FRACTION, VALIDATION_FRACTION = 0.70, 0.15


def time_splits(frame: pd.DataFrame, timestamp: str) -> dict[str, pd.DataFrame]:
    """train / validation / test: the first 70 %, the next 15 % and the last 15 % of the rows by event time."""
    frame = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    a, b = int(len(frame) * TRAIN_FRACTION), int(len(frame) * (TRAIN_FRACTION + VALIDATION_FRACTION))
    parts = (frame.iloc[:a], frame.iloc[a:b], frame.iloc[b:])
    return {name: part.reset_index(drop=True) for name, part in zip(layout.SPLITS, parts, strict=True)}


def write_training_set(config: Config, storage: Storage, splits: dict[str, pd.DataFrame], run_id: str) -> dict:
    """``splits`` as training set ``run_id`` of the config's feature service (the files and manifest the
    training-set stage writes, without Feast); its manifest, which is also the newest."""
    service, ts = config.features.service, config.source.timestamp_column
    digest = hashlib.sha256()
    for name in layout.SPLITS:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(splits[name], preserve_index=False), buf, compression="zstd")
        storage.write_bytes(layout.split_key(service, run_id, name), buf.getvalue())
        digest.update(buf.getvalue())
    made = TrainingSet(
        run_id=run_id,
        prefix=storage.uri(layout.training_set_run_prefix(service, run_id)),
        feature_service=service,
        feature_service_version=service_version(config),
        features=config.features.feature_names(),
        request_features=list(config.features.request_features),
        label=config.source.label_column,
        rows={name: len(part) for name, part in splits.items()},
        time_range={name: [part[ts].min().isoformat(), part[ts].max().isoformat()] for name, part in splits.items()},
        content_hash=digest.hexdigest(),
        input_content_hash=digest.hexdigest(),
    )
    body = json.dumps({**asdict(made), "created": datetime.now(UTC).isoformat()}, indent=2)
    storage.write_text(layout.training_set_manifest_key(service, run_id), body)
    storage.write_text(layout.latest_key(layout.training_set_prefix(service)), body)
    return json.loads(body)


def workspace_config(workspace: Path, workers: int, epochs: int = EPOCHS, **training: object) -> Config:
    """The fraud example's PyTorch config on a local workspace, training exactly ``epochs`` epochs (unless
    ``training`` sets an ``early_stopping_patience`` below that), other training settings overridden."""
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(workspace)}
    settings = {"framework": "pytorch", "epochs": epochs, "early_stopping_patience": epochs + 1, "workers": workers}
    data["training"].update(settings | training)
    return parse_config(data, "train_ddp benchmark")


class Scores:
    """Each case's last registered card, scored on the test split when the process exits."""

    def __init__(self, storage: Storage, test: pd.DataFrame, label: str) -> None:
        self.storage, self.test, self.label = storage, test, label
        self.cards: dict[str, dict[str, Any]] = {}

    def lines(self) -> list[str]:
        out = []
        for case, card in self.cards.items():
            with tempfile.TemporaryDirectory(prefix="kfloop-bench-") as tmp:
                folder = ModelRegistry(self.storage, card["model"]).fetch(card["version"], Path(tmp))
                p = load_exported(folder)(self.test)
            auc = roc_auc_score(self.test[self.label].to_numpy(), p)
            val, history = card["metrics"]["validation"], card["history"]
            best = min(history, key=lambda h: h["val_loss"])
            out.append(
                f"{case}: validation ROC AUC {val['roc_auc']:.4f}, PR AUC {val['pr_auc']:.4f}; test ROC AUC "
                f"{auc:.4f}; {len(history)} epochs, best {best['epoch']} (val_loss {best['val_loss']:.5f})"
            )
        return out

    def print(self) -> None:
        for line in self.lines():
            print(line, flush=True)


def _empty_registry(storage: Storage, config: Config) -> None:
    root = Path(storage.uri(layout.registry_prefix(config.training.model_name)))
    shutil.rmtree(root, ignore_errors=True)


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """The cached demo training set as a local workspace's training set, then the three cases."""
    n = rows or ROWS
    data_dir = data_dir or ROOT / ".kfloop" / "bench" / "data"
    one, two = (workspace_config(data_dir / f"train_ddp-{n}-{seed}", w) for w in (1, WORKERS))
    path, frame = cached_training_set(one, n, seed, data_dir)
    splits = time_splits(frame, one.source.timestamp_column)
    del frame
    storage = open_storage(one.storage)
    manifest = write_training_set(one, storage, splits, f"bench-{n}-{seed}")
    scores = Scores(storage, splits["test"], one.source.label_column)
    atexit.register(scores.print)

    def step(config: Config, case: str) -> None:
        scores.cards[case] = train_and_register(config, storage, pipeline_run="bench")

    def torchrun_one(case: str) -> None:
        launch.run_local(one, launch.worker_args(config_to_json(one), manifest["run_id"], "bench"), workers=1)
        key = training_identity(one, manifest)["key"]
        versions = ModelRegistry(storage, one.training.model_name).list()
        scores.cards[case] = next(v.card for v in versions if v.card["identity"]["key"] == key)

    names = (f"workers {WORKERS} (DDP, torchrun, gloo)", "workers 1 (in the step's process)", "1 process via torchrun")
    clear = lambda: _empty_registry(storage, one)  # noqa: E731
    cases: list[Case[None]] = [
        Case(names[0], "ours", lambda _: step(two, names[0]), setup=clear),
        Case(names[1], "peer", lambda _: step(one, names[1]), setup=clear),
        Case(names[2], "peer", lambda _: torchrun_one(names[2]), setup=clear),
    ]
    train_rows = len(splits["train"])
    params = {
        "seed": seed,
        "demo_rows": n,
        "train_rows": train_rows,
        "validation_rows": len(splits["validation"]),
        "test_rows": len(splits["test"]),
        "epochs": EPOCHS,
        "workers": WORKERS,
        "batch_size": one.training.batch_size,
        "positives_train": int(np.asarray(splits["train"][one.source.label_column]).sum()),
        "data": str(path),
        "config": str(CONFIG_PATH),
    }
    title = (
        f"train step, {EPOCHS} epochs on {train_rows:,} train rows: {WORKERS} DDP processes vs 1 (rows x epochs / s)"
    )
    return Benchmark("train_ddp", title, cases, rows=train_rows * EPOCHS, params=params)
