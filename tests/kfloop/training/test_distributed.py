"""Distributed training (``training.workers`` > 1) on this machine: the train step with two processes under
torchrun (gloo, PyTorch DDP) trains a model as good as one process's on the same training set, stops early in
step on every rank, and registers it once (rank 0); plus the pieces it stands on: the world read from torchrun's
variables, the shards of a batch, the config's limits, and the model identity.

The training set is the demo's, joined point-in-time without Feast (the trainer tests' builder) and written as a
local workspace's training set (``benchmarks.train_ddp.write_training_set``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import kfloop
from benchmarks.train import training_set
from benchmarks.train_ddp import time_splits, workspace_config, write_training_set
from kfloop.components.train import train_and_register, training_identity
from kfloop.config import Config
from kfloop.errors import ConfigError, KfloopError, PipelineError
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage, open_storage
from kfloop.training import distributed, launch
from kfloop.training.base import Split, package_versions
from kfloop.training.preprocess import UNKNOWN, Preprocessor, feature_columns
from kfloop.training.trainer import load_exported, train
from tests.conftest import free_port
from tests.kfloop.training.test_trainers import REPO, config_with

ROWS, DATA_SEED = 6000, 2027
#: Two processes see the same global batches as one (only dropout masks and float sums differ): measured |ROC AUC
#: difference| 0.0007 on validation, 0.0028 on test. The exact check of the DDP steps is the test after this one.
AUC_TOLERANCE = 0.02
#: Enough epochs that early stopping, not the epoch limit, ends training (it must end on every rank at once).
TRAINING = {"batch_size": 256, "early_stopping_patience": 2, "job_timeout_minutes": 3}
EPOCHS = 40


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Storage, dict[str, pd.DataFrame], dict]:
    root = tmp_path_factory.mktemp("ddp") / "ws"
    config = workspace_config(root, 1, EPOCHS, **TRAINING)
    splits = time_splits(training_set(config, ROWS, DATA_SEED), config.source.timestamp_column)
    storage = open_storage(config.storage)
    manifest = write_training_set(config, storage, splits, "ddp-test")
    return root, storage, splits, manifest


def _test_auc(storage: Storage, card: dict, test: pd.DataFrame, tmp: Path) -> float:
    folder = ModelRegistry(storage, card["model"]).fetch(card["version"], tmp / card["version"])
    return float(roc_auc_score(test["is_fraud"].to_numpy(), load_exported(folder)(test)))


def test_two_processes_train_what_one_does_and_rank_0_registers_once(
    workspace: tuple[Path, Storage, dict[str, pd.DataFrame], dict], tmp_path: Path
) -> None:
    root, storage, splits, _ = workspace
    one, two = (workspace_config(root, w, EPOCHS, **TRAINING) for w in (1, 2))
    single = train_and_register(one, storage, pipeline_run="run-1")
    started = time.monotonic()
    double = train_and_register(two, storage, pipeline_run="run-2")  # no cluster: torchrun, 2 local processes
    print(f"2 processes: {time.monotonic() - started:.1f} s (torchrun start, imports, training, registration)")

    registry = ModelRegistry(storage, one.training.model_name)
    assert [v.version for v in registry.list()] == [single["version"], double["version"]]  # rank 1 registered none
    assert double["distributed"] == {"processes": 2, "device": "cpu", "backend": "gloo"}
    assert "distributed" not in single
    assert double["pipeline_run"] == "run-2" and double["hyperparameters"]["workers"] == 2
    assert double["training_set"]["run_id"] == single["training_set"]["run_id"] == "ddp-test"
    assert double["identity"]["key"] != single["identity"]["key"]  # another way of training, another model

    for card in (single, double):  # early stopping ended both runs, on the epoch after `patience` without gain
        epochs = len(card["history"])
        best = min(range(epochs), key=lambda i: card["history"][i]["val_loss"]) + 1
        assert epochs < EPOCHS and epochs == best + TRAINING["early_stopping_patience"]
    auc_val = {c["version"]: c["metrics"]["validation"]["roc_auc"] for c in (single, double)}
    auc_test = {c["version"]: _test_auc(storage, c, splits["test"], tmp_path) for c in (single, double)}
    print(f"ROC AUC validation {auc_val}, test {auc_test}; epochs {len(single['history'])} vs {len(double['history'])}")
    assert min(auc_test.values()) >= 0.85  # both learned the signal
    assert abs(auc_val[single["version"]] - auc_val[double["version"]]) <= AUC_TOLERANCE
    assert abs(auc_test[single["version"]] - auc_test[double["version"]]) <= AUC_TOLERANCE

    again = train_and_register(two, storage, pipeline_run="run-3")  # same identity: reused, nothing started
    assert again["reused"] and again["version"] == double["version"] and len(registry.list()) == 2


# --- the DDP loop against the single one --------------------------------------------------------------------------

RANK_CHILD = """
import json, os, sys
import numpy as np
from kfloop.config import TrainingConfig
from kfloop.training import distributed, torch_trainer
from kfloop.training.base import Split
from kfloop.training.preprocess import Preprocessor
torch_trainer.DROPOUT = 0.0  # no random masks: two ranks then compute the single process's gradients
folder, config = sys.argv[1], TrainingConfig.model_validate_json(sys.argv[2])
data = np.load(f"{folder}/data.npz")
train, val = (Split(*(data[f"{s}_{a}"] for a in ("num", "cat", "y"))) for s in ("train", "val"))
pre = Preprocessor.from_json(open(f"{folder}/preprocess.json").read())
with distributed.process_group("cpu", os.environ) as world:
    fit = torch_trainer.fit(config, pre, train, val, 1.0)
np.savez(f"{folder}/rank{world.rank}.npz", **{k: v.numpy() for k, v in fit.network.state_dict().items()})
print(json.dumps(fit.history))
"""
AXES = ("num", "cat", "y")
TINY = {"epochs": 4, "batch_size": 100, "early_stopping_patience": 5, "hidden_units": (16, 8)}


def synthetic(rows: int = 1000, seed: int = 5) -> tuple[Preprocessor, Split, Split]:
    """Standardized numbers and one category whose label depends on both: (preprocessor, train, validation)."""
    rng = np.random.default_rng(seed)
    x_num = rng.normal(size=(rows, 3)).astype(np.float32)
    x_cat = rng.integers(1, 4, size=(rows, 1)).astype(np.int64)
    y = (x_num[:, 0] - x_num[:, 1] + (x_cat[:, 0] == 2) + rng.normal(scale=0.5, size=rows) > 0.5).astype(np.float32)
    pre = Preprocessor(["a", "b", "c"], ["k"], [0.0] * 3, [1.0] * 3, {"k": [UNKNOWN, "x", "y", "z"]})
    cut = int(rows * 0.8)
    return pre, Split(x_num[:cut], x_cat[:cut], y[:cut]), Split(x_num[cut:], x_cat[cut:], y[cut:])


def test_ddp_steps_are_the_single_process_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dropout, two ranks each on half of every batch take the single process's optimizer steps: the
    ranks end with the same weights bit for bit (DDP keeps them in step), and those are the single process's up
    to the order of float sums (gradients not averaged, or shards that are not the batch's rows, move them far
    beyond it)."""
    from kfloop.config import TrainingConfig
    from kfloop.training import torch_trainer

    monkeypatch.setattr(torch_trainer, "DROPOUT", 0.0)
    pre, train_split, val = synthetic()
    config = TrainingConfig(**TINY)
    single = torch_trainer.fit(config, pre, train_split, val, 1.0)
    splits = {"train": train_split, "val": val}
    arrays = {f"{s}_{a}": getattr(split, "y" if a == "y" else f"x_{a}") for s, split in splits.items() for a in AXES}
    np.savez(tmp_path / "data.npz", **arrays)
    (tmp_path / "preprocess.json").write_text(pre.to_json())
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_CHILD, str(tmp_path), config.model_dump_json()],
            env={**env, "RANK": str(rank)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(err[-2000:] for _, err in outputs)
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    expected = {k: v.numpy() for k, v in single.network.state_dict().items()}
    for name, weights in expected.items():
        assert np.array_equal(ranks[0][name], ranks[1][name]), name
        np.testing.assert_allclose(ranks[0][name], weights, rtol=1e-4, atol=1e-5, err_msg=name)
    histories = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert histories[0] == histories[1]  # one agreed validation loss per epoch on every rank
    for got, want in zip(histories[0], single.history, strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)


FAILING_RANK = """
import os, sys, time
if os.environ["RANK"] == "1":
    print("rank 1: the training set is unreadable", flush=True)
    sys.exit(3)
time.sleep(120)  # rank 0 would wait for rank 1 in its next collective: torchrun must end it
"""


def test_a_failed_rank_ends_the_run_and_the_error_quotes_it(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(FAILING_RANK)
    started = time.monotonic()
    with pytest.raises(PipelineError) as err:
        launch.run_local(workspace_config(tmp_path, 2), [str(script)])
    assert time.monotonic() - started < 60  # rank 0 did not sleep its 120 s: torchrun stopped it
    assert str(err.value) == (
        "training.workers 2: the local training processes failed (torchrun exit code 1); rank 1 exited with 3 "
        "first; its last output:\nrank 1: the training set is unreadable"
    )


# --- the pieces -------------------------------------------------------------------------------------------------


def test_the_world_comes_from_torchruns_variables() -> None:
    assert distributed.from_env({}) is None  # not started by torchrun or a PyTorchJob: one process
    env = {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    world = distributed.from_env(env, "cpu")
    assert world == distributed.World(size=3, rank=2, local_rank=0, device="cpu") and not world.primary
    assert distributed.from_env({**env, "RANK": "0", "LOCAL_RANK": "1"}, "gpu") == distributed.World(3, 0, 1, "gpu")
    assert distributed.from_env({"WORLD_SIZE": "1"}) == distributed.World(1, 0)  # a world of one needs no master
    with pytest.raises(KfloopError, match=r"RANK=3 is not within WORLD_SIZE=3 \(0 to 2\)"):
        distributed.from_env({**env, "RANK": "3"})
    with pytest.raises(KfloopError, match="WORLD_SIZE=3 but MASTER_ADDR and MASTER_PORT not set"):
        distributed.from_env({"WORLD_SIZE": "3", "RANK": "0"})
    with pytest.raises(KfloopError, match="WORLD_SIZE='two' is not an integer"):
        distributed.from_env({**env, "WORLD_SIZE": "two"})
    with distributed.process_group("cpu", {}) as none:  # nothing to join: the trainer's single-process path
        assert none is None and distributed.current() is None


@pytest.mark.parametrize(("rows", "size"), [(1024, 2), (1023, 2), (17, 3), (5, 5)])
def test_the_ranks_shards_partition_every_batch(rows: int, size: int) -> None:
    batch = np.random.default_rng(rows).permutation(10 * rows)[:rows]
    shards = [distributed.shard(batch, distributed.World(size, rank)) for rank in range(size)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(batch.tolist())  # every row once, on one rank
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # shares differ by at most a row
    with pytest.raises(KfloopError, match=r"cannot give each of training\.workers 4 processes a row"):
        distributed.check_batches(rows=6, batches=2, world=distributed.World(4, 0))


def test_the_tensorflow_trainer_is_single_process_and_cpu() -> None:
    with pytest.raises(ConfigError, match=r"training: workers: 2 needs framework pytorch; the TensorFlow trainer"):
        config_with(framework="tensorflow", workers=2)
    with pytest.raises(ConfigError, match="training: device: gpu needs framework pytorch"):
        config_with(framework="tensorflow", device="gpu")
    with pytest.raises(ConfigError, match=r"training.workers: Input should be greater than or equal to 1"):
        config_with(workers=0)


def test_device_gpu_without_a_cuda_device_is_a_clear_error(
    workspace: tuple[Path, Storage, dict[str, pd.DataFrame], dict],
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    _, _, splits, _ = workspace
    with pytest.raises(KfloopError, match=r"training.device: gpu, but torch .* sees no CUDA device"):
        train(config_with(device="gpu"), splits["train"], splits["validation"])


def _identity_before_distributed_settings(config: Config, manifest: dict) -> str:
    """The identity key as computed before workers, device and job_timeout_minutes existed."""
    numeric, categorical = feature_columns(config)
    training = config.training.model_dump(mode="json", exclude={"gate", "owner", "description"})
    for key in ("workers", "device", "job_timeout_minutes"):
        del training[key]
    parts = {
        "training_set": manifest["content_hash"],
        "label": config.source.label_column,
        "inputs": {"numeric": numeric, "categorical": categorical},
        "training": training,
        "code": {"kfloop": kfloop.__version__, **package_versions(config.training.framework)},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_a_single_cpu_process_keeps_its_model_identity(
    workspace: tuple[Path, Storage, dict[str, pd.DataFrame], dict],
) -> None:
    """Registered models stay reusable: one CPU process trains what it did before these settings existed, so
    its key is the same; the timeout changes nothing trained, more workers or a GPU do."""
    root, _, _, manifest = workspace
    one = workspace_config(root, 1)
    key = training_identity(one, manifest)["key"]
    assert key == _identity_before_distributed_settings(one, manifest)
    assert training_identity(workspace_config(root, 1, job_timeout_minutes=5), manifest)["key"] == key
    assert training_identity(workspace_config(root, 2), manifest)["key"] != key
    assert training_identity(workspace_config(root, 1, device="gpu"), manifest)["key"] != key
