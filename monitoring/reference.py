"""A model version's reference profile: its training rows as the drift check compares them.

The train stage builds it when it registers a version and stores it as one file of the version
(``layout.REFERENCE_PROFILE_FILE``), so it is covered by the card's checksums and a check never re-reads or
re-sorts the training set. The card names it under ``lineage.reference_profile``: which split, how many of
its rows, the sampling seed, and the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop.config import Config
from kfloop.files import atomic_write
from kfloop.layout import REFERENCE_PROFILE_FILE
from kfloop.monitoring.columns import monitored_columns, monitored_frame
from kfloop.monitoring.profile import build_profile, profile_to_bytes

#: The split a reference is built from.
REFERENCE_SPLIT = "train"


def reference_rows(train: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """The whole train split, or a seeded sample of ``cap`` of its rows (in their order).

    The train split, because it is the distribution the model was fitted on: validation only stops training
    and picks the threshold, test only feeds the gate. The cap (``monitoring.reference_rows``), because the
    profile keeps every numeric value and travels with the version (each check and each serving pod downloads
    it), while a two-sample test's precision barely grows past a few hundred thousand reference rows. Seeded
    with ``training.seed``, so retraining the same data gives the same profile.
    """
    if len(train) <= cap:
        return train
    picked = np.sort(np.random.default_rng(seed).choice(len(train), size=cap, replace=False))
    return train.iloc[picked]


def _predictions(
    config: Config, predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, classes: list[str] | None
) -> np.ndarray:
    """What serving logs as the prediction for ``rows``: the score (binary, regression) or the class."""
    out = np.asarray(predict(rows))
    if config.training.task == "multiclass":
        return np.asarray(classes, dtype=object)[out.argmax(axis=1)]
    return out.astype(np.float64)


def write_reference_profile(
    config: Config,
    train: pd.DataFrame,
    predict: Callable[[pd.DataFrame], np.ndarray],
    directory: Path,
    classes: list[str] | None = None,
) -> dict:
    """Profile the reference rows of ``train`` (inputs and the model's predictions on them) into
    ``directory/REFERENCE_PROFILE_FILE``; returns the card's ``lineage.reference_profile`` entry."""
    cols = monitored_columns(config)
    seed = config.training.seed
    rows = reference_rows(train, config.monitoring.reference_rows, seed)
    frame = rows.assign(**{cols.prediction: _predictions(config, predict, rows, classes)})
    profile = build_profile(
        monitored_frame(frame, cols.all_numeric, cols.all_categorical), cols.all_numeric, cols.all_categorical
    )
    data = profile_to_bytes(profile)
    atomic_write(Path(directory) / REFERENCE_PROFILE_FILE, lambda fh: fh.write(data))
    return {
        "file": REFERENCE_PROFILE_FILE,
        "split": REFERENCE_SPLIT,
        "rows": len(rows),
        "split_rows": len(train),
        "sampled": len(rows) < len(train),
        "seed": seed,
        "numeric": cols.numeric,
        "categorical": cols.categorical,
        "prediction": {"column": cols.prediction, "kind": cols.prediction_kind},
    }
