"""Files of an exported model: names, checksums, the saved preprocessor, and the framework loaders.

Everything here runs without the training code: serving (and ``load_exported``) reloads a model with
plain ``torch.jit.load`` / ``tf.saved_model.load`` plus the saved ``preprocess.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kfloop.errors import StorageError
from kfloop.files import atomic_write, file_sha256
from kfloop.training.preprocess import Preprocessor

#: The preprocessor fitted on the training split, applied before either model.
PREPROCESS_FILE = "preprocess.json"
#: PyTorch: a TorchScript module ``forward(x_num, x_cat) -> probabilities``.
TORCHSCRIPT_FILE = "model.pt"
#: TensorFlow: a SavedModel directory whose ``serving_default`` maps (x_num, x_cat) -> probabilities.
SAVED_MODEL_DIR = "saved_model"
#: Input names of both exported models, and the output key of the SavedModel signature.
INPUT_NUMERIC, INPUT_CATEGORICAL, OUTPUT = "x_num", "x_cat", "probabilities"
#: Rows per forward pass when predicting a large frame.
PREDICT_BATCH = 65536

ArrayPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def write_preprocessor(preprocessor: Preprocessor, directory: Path) -> Path:
    path = directory / PREPROCESS_FILE
    data = preprocessor.to_json().encode()
    atomic_write(path, lambda fh: fh.write(data))
    return path


def read_preprocessor(directory: Path) -> Preprocessor:
    path = directory / PREPROCESS_FILE
    try:
        return Preprocessor.from_json(path.read_text())
    except FileNotFoundError as err:
        raise StorageError(f"exported model {directory}: {PREPROCESS_FILE} is missing") from err
    except (ValueError, TypeError) as err:
        raise StorageError(f"exported model {directory}: {PREPROCESS_FILE} is unreadable ({err})") from err


def checksums(directory: Path, paths: list[Path]) -> dict[str, str]:
    """{posix path relative to ``directory``: sha256} of every file in ``paths`` (directories walked)."""
    out: dict[str, str] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            out[file.relative_to(directory).as_posix()] = file_sha256(file)
    return dict(sorted(out.items()))


def in_batches(fn: ArrayPredictor, x_num: np.ndarray, x_cat: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
    """``fn`` over row slices, concatenated as float64 probabilities of shape [n]."""
    parts = [fn(x_num[i : i + batch], x_cat[i : i + batch]) for i in range(0, len(x_num), batch)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, dtype=np.float64)


def load_torchscript(path: Path) -> ArrayPredictor:
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def predict(x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        with torch.inference_mode():  # no autograd bookkeeping at all (cheaper than no_grad per call)
            return module(torch.from_numpy(x_num), torch.from_numpy(x_cat)).numpy()

    return predict


def load_saved_model(path: Path) -> ArrayPredictor:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def predict(x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        out = signature(**{INPUT_NUMERIC: tf.constant(x_num), INPUT_CATEGORICAL: tf.constant(x_cat)})
        return out[OUTPUT].numpy()

    return predict


def load_arrays(directory: Path) -> ArrayPredictor:
    """The exported network in ``directory``, whichever framework wrote it."""
    if (directory / TORCHSCRIPT_FILE).is_file():
        return load_torchscript(directory / TORCHSCRIPT_FILE)
    if (directory / SAVED_MODEL_DIR).is_dir():
        return load_saved_model(directory / SAVED_MODEL_DIR)
    raise StorageError(f"exported model {directory}: neither {TORCHSCRIPT_FILE} nor {SAVED_MODEL_DIR}/ found")


def label_scaling(y: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a numeric training label: regressors learn the standardized label and export the
    inverse, so served predictions are in the label's own units (std 1 for a constant label)."""
    y = np.asarray(y, dtype=np.float64)
    std = float(y.std())
    return float(y.mean()), std if std > 0 else 1.0
