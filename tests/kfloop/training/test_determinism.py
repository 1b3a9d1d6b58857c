"""Training is deterministic across processes, as the pipeline runs it (each step its own interpreter): the same
splits and config give the same predictions, metrics, threshold and loss history, bit for bit, in a fresh
interpreter as in this one. Measured on CPU for both frameworks: torch (seeded, deterministic algorithms, one
thread) and TensorFlow (seeded, op determinism) train bit-identical weights; only the exported files' own
metadata differs (TorchScript's zip and the SavedModel fingerprint carry per-save ids), which is why the registry
reuses a version by its identity and never compares model files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.kfloop.training.test_trainers import REPO, Splits, config_with, point_in_time_training_set

EPOCHS = 5
CHILD = """
import json, sys
import numpy as np, pandas as pd
from kfloop.training.trainer import train
from tests.kfloop.training.test_trainers import config_with
framework, epochs, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
train_, val, test = (pd.read_parquet(f"{folder}/{name}.parquet") for name in ("train", "validation", "test"))
model = train(config_with(framework=framework, epochs=epochs), train_, val)
np.save(f"{folder}/p.npy", model.predict(test))
print(json.dumps({"metrics": model.metrics, "history": model.history, "threshold": model.threshold}))
"""


@pytest.fixture(scope="module")
def splits() -> Splits:
    return point_in_time_training_set(config_with(), 8000, 2027)


@pytest.mark.parametrize("framework", ["pytorch", pytest.param("tensorflow", marks=pytest.mark.slow)])
def test_a_fresh_process_trains_the_same_model(splits: Splits, framework: str, tmp_path: Path) -> None:
    from kfloop.training.trainer import train

    for name, frame in zip(("train", "validation", "test"), splits, strict=True):
        frame.to_parquet(tmp_path / f"{name}.parquet")
    args = [sys.executable, "-c", CHILD, framework, str(EPOCHS), str(tmp_path)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    there = json.loads(run.stdout.strip().splitlines()[-1])
    here = train(config_with(framework=framework, epochs=EPOCHS), splits[0], splits[1])
    assert np.array_equal(np.load(tmp_path / "p.npy"), here.predict(splits[2]))
    assert there == {"metrics": here.metrics, "history": here.history, "threshold": here.threshold}
