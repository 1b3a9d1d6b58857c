"""The TensorFlow/Keras twin of the PyTorch model: same inputs, same MLP, sigmoid output.

Functional API with two inputs (``x_num`` float32 [n, k], ``x_cat`` int64 [n, m]), one Embedding per
categorical column, Dense+ReLU+Dropout layers, class weights, EarlyStopping that restores the best
weights. Seeding uses ``keras.utils.set_random_seed`` and TF op determinism (process-wide, as TF has
no scoped switch). Exported as a SavedModel whose ``serving_default`` signature maps
(x_num, x_cat) -> {"probabilities": [n]}, loadable with ``tf.saved_model.load`` alone.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kfloop.config import TrainingConfig
from kfloop.training import classes, model_io
from kfloop.training.base import Fit, Split
from kfloop.training.preprocess import Preprocessor

DROPOUT = 0.1


def build_model(
    n_numeric: int,
    cardinalities: list[int],
    embedding_dim: int,
    hidden_units: tuple[int, ...],
    activation: str = "sigmoid",
    outputs: int = 1,
) -> keras.Model:
    """Inputs [x_num, x_cat] (always both, so every caller passes the same pair), output [n, 1] probabilities.

    The output keeps its trailing axis: Keras' binary cross-entropy averages over the last axis, so a
    flat [n] output would collapse each batch to one value before class/sample weights could apply."""
    x_num = keras.Input(shape=(n_numeric,), dtype="float32", name=model_io.INPUT_NUMERIC)
    x_cat = keras.Input(shape=(len(cardinalities),), dtype="int64", name=model_io.INPUT_CATEGORICAL)
    parts = [x_num] if n_numeric else []
    for j, cardinality in enumerate(cardinalities):
        embedded = keras.layers.Embedding(cardinality, embedding_dim, name=f"embedding_{j}")(x_cat[:, j])
        parts.append(embedded)
    h = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concat")(parts)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(h)
        h = keras.layers.Dropout(DROPOUT, name=f"dropout_{i}")(h)
    out = keras.layers.Dense(outputs, activation=activation, name=model_io.OUTPUT)(h)
    return keras.Model(inputs=[x_num, x_cat], outputs=out, name="tabular")


def _scaling(model: keras.Model) -> tuple[float, float]:
    """(center, scale) turning the output into the label's units: (0, 1) for probabilities."""
    return getattr(model, "label_scaling", (0.0, 1.0))


def _predictor(model: keras.Model) -> model_io.ArrayPredictor:
    center, scale = _scaling(model)
    multiclass = getattr(model, "multiclass", False)

    def predict(x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        out = np.asarray(model([tf.constant(x_num), tf.constant(x_cat)], training=False))
        if multiclass:
            return out  # [n, k] class probabilities
        out = out[:, 0]
        return out * scale + center if scale != 1.0 or center != 0.0 else out

    return lambda x_num, x_cat: model_io.in_batches(predict, x_num, x_cat)


def _weights(y: np.ndarray, pos_weight: float) -> np.ndarray:
    return np.where(y == 1, pos_weight, 1.0).astype(np.float32)


def fit(config: TrainingConfig, preprocessor: Preprocessor, train: Split, val: Split, pos_weight: float) -> Fit:
    """Adam on binary cross-entropy with class weights {0: 1, 1: pos_weight} (validation loss weighted the
    same way, as in the PyTorch trainer, so early stopping compares like with like), or on the mean squared
    error of the standardized label (regression)."""
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    regression, multiclass = config.task == "regression", config.task == "multiclass"
    k = int(train.y.max()) + 1 if multiclass else 1
    model = build_model(
        len(preprocessor.numeric),
        preprocessor.cardinalities(),
        config.embedding_dim,
        config.hidden_units,
        activation="linear" if regression else "softmax" if multiclass else "sigmoid",
        outputs=k,
    )
    y_train, y_val, val_weights, class_weight = train.y, val.y, _weights(val.y, pos_weight), {0: 1.0, 1: pos_weight}
    loss = "mean_squared_error" if regression else "binary_crossentropy"
    if multiclass:
        model.multiclass = True  # read by _predictor and _Serving: all k probabilities
        weights = classes.class_weights(train.y, k, config.class_weight == "balanced")
        y_train, y_val = train.y.astype(np.int64), val.y.astype(np.int64)
        val_weights, class_weight = weights[y_val], {i: float(w) for i, w in enumerate(weights)}
        loss = "sparse_categorical_crossentropy"
    if regression:
        center, scale = model_io.label_scaling(train.y)
        model.label_scaling = (center, scale)  # read by _scaling: predictions and the export in label units
        y_train, y_val = (train.y - center) / scale, (val.y - center) / scale
        val_weights, class_weight = np.ones_like(val.y), None
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
    )
    result = model.fit(
        [train.x_num, train.x_cat],
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=([val.x_num, val.x_cat], y_val, val_weights),
        validation_batch_size=max(config.batch_size, 16_384),  # evaluation only: big batches, fewer steps
        class_weight=class_weight,
        shuffle=True,
        callbacks=[stop],
        verbose=0,
    )
    losses, val_losses = result.history["loss"], result.history["val_loss"]
    history = [
        {"epoch": i + 1, "train_loss": float(t), "val_loss": float(v)}
        for i, (t, v) in enumerate(zip(losses, val_losses, strict=True))
    ]
    best_epoch = int(np.argmin(val_losses)) + 1
    return Fit(model, _predictor(model), history, best_epoch, versions())


class _Serving(tf.Module):
    """The SavedModel root: the Keras model's variables and one serving signature."""

    def __init__(self, model: keras.Model, n_numeric: int, n_categorical: int) -> None:
        super().__init__()
        self.model = model
        self.center, self.scale = _scaling(model)
        self.multiclass = bool(getattr(model, "multiclass", False))
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, n_numeric], tf.float32, name=model_io.INPUT_NUMERIC),
                tf.TensorSpec([None, n_categorical], tf.int64, name=model_io.INPUT_CATEGORICAL),
            ],
        )

    def _serve(self, x_num: tf.Tensor, x_cat: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.model([x_num, x_cat], training=False)
        if self.multiclass:
            return {model_io.OUTPUT: out}  # [n, k] class probabilities
        out = out[:, 0]
        if self.scale != 1.0 or self.center != 0.0:  # a regressor: back to the label's units
            out = out * self.scale + self.center
        return {model_io.OUTPUT: out}


def export(model: keras.Model, preprocessor: Preprocessor, directory: Path) -> Path:
    """SavedModel at ``directory/saved_model`` with signature ``serving_default``."""
    path = directory / model_io.SAVED_MODEL_DIR
    root = _Serving(model, len(preprocessor.numeric), len(preprocessor.categorical))
    tf.saved_model.save(root, str(path), signatures={"serving_default": root.serve})
    return path


def load(directory: Path) -> model_io.ArrayPredictor:
    """The SavedModel's ``serving_default`` signature that ``export`` wrote into ``directory``."""
    return model_io.load_saved_model(directory / model_io.SAVED_MODEL_DIR)


def versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}
