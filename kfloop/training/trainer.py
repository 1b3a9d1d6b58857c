"""The framework-neutral trainer: one interface over the PyTorch and TensorFlow models.

``train`` fits the preprocessor on the training split only, hands arrays to the configured framework's
module (``base.trainer_for``: imported on first use, so importing kfloop never loads either framework),
then picks the decision threshold and scores on validation. ``export`` writes the self-contained serving
artifact plus ``preprocess.json``; ``load_exported`` reloads it without any training code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kfloop.config import Config, TrainingConfig
from kfloop.errors import ConfigError, KfloopError, SourceError, StorageError
from kfloop.training import calibration, classes, model_io
from kfloop.training.base import FRAMEWORKS, Split, check_framework, trainer_for
from kfloop.training.calibration import Calibrator
from kfloop.training.metrics import choose_threshold, score, uncalibrated
from kfloop.training.preprocess import Preprocessor, feature_columns


@dataclass
class TrainedModel:
    """A trained model (binary, multiclass or regression) and everything needed to export, evaluate and
    describe it."""

    framework: str
    preprocessor: Preprocessor
    threshold: float
    metrics: dict[str, float]  # on validation, at ``threshold``
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss
    predict: Callable[[pd.DataFrame], np.ndarray]  # features -> probabilities [n] ([n, k]) or predictions [n]
    network: Any = field(default=None, repr=False)  # torch.nn.Module | keras.Model (for export)
    best_epoch: int = 0  # 1-based epoch whose weights were kept
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # framework package versions
    calibrator: Calibrator | None = None  # fitted on validation (training.calibration), saved with the export
    classes: list[str] | None = None  # multiclass: output column k is class classes[k]
    predict_raw: Callable[[pd.DataFrame], np.ndarray] | None = field(default=None, repr=False)  # before calibration


def positive_weight(y: np.ndarray) -> float:
    """neg/pos: weighting positives by it balances both classes' total weight."""
    pos = float(y.sum())
    return (len(y) - pos) / pos


def _present(config: Config, frame: pd.DataFrame, name: str) -> pd.Series:
    """The label column of a split, every row labelled."""
    label = config.source.label_column
    if label not in frame.columns:
        raise KfloopError(f"{name} split has no label column {label!r}")
    missing = int(frame[label].isna().sum())
    if missing:  # the training-set stage drops unlabeled rows: a split holding some was not made by it
        raise SourceError(
            f"{name} split: label column {label!r} is null in {missing:,} of {len(frame):,} rows; unlabeled rows "
            "belong in the feature history, not in training (build the split with the training-set stage, "
            "which leaves them out)"
        )
    return frame[label]


def _labels(config: Config, frame: pd.DataFrame, name: str, vocab: list[str] | None) -> np.ndarray:
    label = config.source.label_column
    present = _present(config, frame, name)
    if vocab is not None:  # multiclass: class indices (-1 for a class the training split did not have)
        return classes.indices(present, vocab).astype(np.float32)
    values = pd.to_numeric(present, errors="coerce")
    if config.training.task == "regression":
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            got = frame[label][bad].iloc[0]
            raise KfloopError(f"{name} split: label {label!r} must be a finite number, got {got!r}")
        return values.to_numpy(dtype=np.float32)
    bad = ~values.isin([0, 1])
    if bad.any():
        raise KfloopError(
            f"{name} split: label {label!r} must be 0 or 1 for training.task binary, got {frame[label][bad].iloc[0]!r} "
            "(a numeric outcome needs training.task: regression)"
        )
    return values.to_numpy(dtype=np.float32)


def _split(
    config: Config, preprocessor: Preprocessor, frame: pd.DataFrame, name: str, vocab: list[str] | None
) -> Split:
    y = _labels(config, frame, name, vocab)
    x_num, x_cat = preprocessor.transform(frame)
    return Split(x_num, x_cat, y)


def _both_classes(tr: Split, va: Split) -> None:
    if tr.y.min() == tr.y.max():
        raise KfloopError(f"train split has only label {int(tr.y[0])}: a classifier needs both classes")
    if va.y.min() == va.y.max():  # the threshold and the validation metrics would be made up
        raise KfloopError(
            f"validation split has only label {int(va.y[0])} in its {len(va.y):,} rows: the threshold and the "
            "validation metrics need both classes (more labelled data, or other features.splits)"
        )


def hyperparameters(training: TrainingConfig) -> dict[str, Any]:
    keys = ("hidden_units", "embedding_dim", "epochs", "batch_size", "learning_rate", "early_stopping_patience")
    return training.model_dump(mode="json", include={*keys, "class_weight", "seed"})


def train(config: Config, train: pd.DataFrame, validation: pd.DataFrame) -> TrainedModel:
    """Fit ``config.training.framework``'s model on ``train``, early-stopped and thresholded on ``validation``."""
    framework = config.training.framework
    check_framework(framework)  # before any data work; the framework itself is imported only to fit
    numeric, categorical = feature_columns(config)
    for name, frame in (("train", train), ("validation", validation)):
        missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
        if missing:
            raise KfloopError(f"{name} split lacks feature columns: {', '.join(missing)}")
        if len(frame) == 0:
            raise KfloopError(f"{name} split is empty")
    if not numeric and not categorical:
        raise ConfigError(
            "no model inputs: features.views, features.tables and features.request_features are all empty"
        )
    preprocessor = Preprocessor.fit(train, numeric, categorical)  # training split only
    task = config.training.task
    vocab = classes.fit(_present(config, train, "train")) if task == "multiclass" else None
    tr = _split(config, preprocessor, train, "train", vocab)
    va = _split(config, preprocessor, validation, "validation", vocab)
    va_fit = va
    if task == "binary":
        _both_classes(tr, va)
        pos_weight = positive_weight(tr.y) if config.training.class_weight == "balanced" else 1.0
    else:  # regression: no classes; multiclass: the framework weighs each class itself
        pos_weight = 1.0
        if vocab is not None and (va.y < 0).any():  # early stopping needs known classes
            known = va.y >= 0
            va_fit = Split(va.x_num[known], va.x_cat[known], va.y[known])

    fit = trainer_for(framework).fit(config.training, preprocessor, tr, va_fit, pos_weight)
    p_val = fit.predict(va.x_num, va.x_cat)
    calibrator, raw = None, p_val
    if task == "binary":
        method = calibration.resolve(config.training.calibration, config.training.class_weight, va.y)
        if method != "none":  # before the threshold: it is chosen on the scores that are served
            calibrator = calibration.fit(method, va.y, p_val)
            p_val = calibrator.apply(p_val)
    threshold = choose_threshold(va.y, p_val, config.training.threshold) if task == "binary" else 0.0
    metrics = score(task, va.y, p_val, threshold, vocab)
    if calibrator is not None:  # before (raw scores) beside after (calibration_error, brier_score)
        metrics.update(uncalibrated(va.y, raw))

    def predict_raw(frame: pd.DataFrame) -> np.ndarray:
        return fit.predict(*preprocessor.transform(frame))

    def predict(frame: pd.DataFrame) -> np.ndarray:
        p = predict_raw(frame)
        return p if calibrator is None else calibrator.apply(p)

    return TrainedModel(
        framework=framework,
        preprocessor=preprocessor,
        threshold=threshold,
        metrics=metrics,
        history=fit.history,
        predict=predict,
        network=fit.network,
        best_epoch=fit.best_epoch,
        hyperparameters={**hyperparameters(config.training), "pos_weight": pos_weight},
        versions=fit.versions,
        calibrator=calibrator,
        classes=vocab,
        predict_raw=predict_raw,
    )


def export(model: TrainedModel, directory: Path) -> dict[str, str]:
    """Write the serving artifact (``model.pt`` or ``saved_model/``) and ``preprocess.json`` into
    ``directory`` (new or empty); returns {relative file path: sha256} of every file written."""
    if model.framework not in FRAMEWORKS:
        raise ConfigError(f"cannot export a model of framework {model.framework!r}")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise StorageError(f"export directory {directory} is not empty")
    directory.mkdir(parents=True, exist_ok=True)
    artifact = trainer_for(model.framework).export(model.network, model.preprocessor, directory)
    files = [artifact, model_io.write_preprocessor(model.preprocessor, directory)]
    if model.calibrator is not None:
        files.append(calibration.write(model.calibrator, directory))
    if model.classes is not None:
        files.append(classes.write(model.classes, directory))
    return model_io.checksums(directory, files)


def load_exported(directory: Path, calibrated: bool = True) -> Callable[[pd.DataFrame], np.ndarray]:
    """The exported model as frame -> probabilities, using only the saved files (no training code); with
    ``calibrated=False`` the raw scores, before the saved calibration (to report calibration before/after)."""
    directory = Path(directory)
    preprocessor = model_io.read_preprocessor(directory)
    predict_arrays = model_io.load_arrays(directory)
    calibrator = calibration.read(directory) if calibrated else None

    def predict(frame: pd.DataFrame) -> np.ndarray:
        p = model_io.in_batches(predict_arrays, *preprocessor.transform(frame))
        return p if calibrator is None else calibrator.apply(p)

    return predict
