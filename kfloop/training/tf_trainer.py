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
from kfloop.training import model_io
from kfloop.training.base import Fit, Split
from kfloop.training.preprocess import Preprocessor

DROPOUT = 0.1


def build_model(
    n_numeric: int, cardinalities: list[int], embedding_dim: int, hidden_units: tuple[int, ...]
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
    out = keras.layers.Dense(1, activation="sigmoid", name=model_io.OUTPUT)(h)
    return keras.Model(inputs=[x_num, x_cat], outputs=out, name="tabular")


def _predictor(model: keras.Model) -> model_io.ArrayPredictor:
    def predict(x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        return np.asarray(model([tf.constant(x_num), tf.constant(x_cat)], training=False))[:, 0]

    return lambda x_num, x_cat: model_io.in_batches(predict, x_num, x_cat)


def _weights(y: np.ndarray, pos_weight: float) -> np.ndarray:
    return np.where(y == 1, pos_weight, 1.0).astype(np.float32)


def fit(config: TrainingConfig, preprocessor: Preprocessor, train: Split, val: Split, pos_weight: float) -> Fit:
    """Adam on binary cross-entropy with class weights {0: 1, 1: pos_weight}; validation loss is weighted
    the same way (as in the PyTorch trainer) so early stopping compares like with like."""
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model(
        len(preprocessor.numeric), preprocessor.cardinalities(), config.embedding_dim, config.hidden_units
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss="binary_crossentropy")
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
    )
    result = model.fit(
        [train.x_num, train.x_cat],
        train.y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=([val.x_num, val.x_cat], val.y, _weights(val.y, pos_weight)),
        validation_batch_size=max(config.batch_size, 16_384),  # evaluation only: big batches, fewer steps
        class_weight={0: 1.0, 1: pos_weight},
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
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, n_numeric], tf.float32, name=model_io.INPUT_NUMERIC),
                tf.TensorSpec([None, n_categorical], tf.int64, name=model_io.INPUT_CATEGORICAL),
            ],
        )

    def _serve(self, x_num: tf.Tensor, x_cat: tf.Tensor) -> dict[str, tf.Tensor]:
        return {model_io.OUTPUT: self.model([x_num, x_cat], training=False)[:, 0]}


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
