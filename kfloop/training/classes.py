"""The class vocabulary of a multiclass model: fitted on the training split, saved beside the export.

Labels may be integers or strings; each is spelled as text (``3`` and ``3.0`` are the same class, as with
categorical inputs) and the sorted texts are the classes, so output column ``k`` of the network is class
``classes[k]``. ``classes.json`` travels with the model (and its checksums), so evaluation and serving
name the predicted class without the training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop.errors import KfloopError, StorageError
from kfloop.files import atomic_write
from kfloop.training.preprocess import category_text

CLASSES_FILE = "classes.json"


def texts(values: pd.Series | np.ndarray) -> np.ndarray:
    """Labels as class texts (object array)."""
    return np.array([category_text(v) for v in np.asarray(values, dtype=object)], dtype=object)


def fit(labels: pd.Series) -> list[str]:
    """The sorted class texts of the training labels; at least two."""
    found = sorted(set(texts(labels.to_numpy())))
    if len(found) < 2:
        raise KfloopError(f"train split has only class {found[0] if found else 'none'}: a classifier needs two")
    return found


def indices(labels: pd.Series | np.ndarray, classes: list[str]) -> np.ndarray:
    """Each label's class index; -1 for a class the training split did not have."""
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position.get(t, -1) for t in texts(labels)], dtype=np.int64)


def class_weights(y: np.ndarray, k: int, balanced: bool) -> np.ndarray:
    """Per class n / (k * count): each class's total weight equal (ones when not balanced)."""
    if not balanced:
        return np.ones(k, dtype=np.float32)
    counts = np.bincount(y.astype(np.int64), minlength=k).astype(np.float64)
    return (len(y) / (k * np.maximum(counts, 1.0))).astype(np.float32)


def write(classes: list[str], directory: Path) -> Path:
    path = directory / CLASSES_FILE
    data = json.dumps(classes).encode()
    atomic_write(path, lambda fh: fh.write(data))
    return path


def read(directory: Path) -> list[str] | None:
    """The classes saved with an export, or None for a binary or regression model."""
    path = Path(directory) / CLASSES_FILE
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise StorageError(f"exported model {directory}: {CLASSES_FILE} is unreadable ({err})") from err
    if not isinstance(found, list) or len(found) < 2 or not all(isinstance(c, str) for c in found):
        raise StorageError(f"exported model {directory}: {CLASSES_FILE} is not a list of at least two class names")
    return found
