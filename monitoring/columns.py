"""The columns the drift check compares, and one spelling of their values on both sides.

The reference (training rows at registration) and the window (inference-log rows) reach the monitor with
different dtypes: an integer category read through pandas with nulls is ``3.0`` in one and ``3`` in the other,
an integer feature is int64 in the log and float64 in a split. Both go through :func:`monitored_frame`, so
the statistics never see a difference that is only one of spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from kfloop.config import Config
from kfloop.serving.log_table import LABEL, SCORE
from kfloop.training.preprocess import category_text, feature_columns


@dataclass(frozen=True)
class MonitoredColumns:
    """Model inputs by kind, and the prediction column as the inference log names it."""

    numeric: list[str]
    categorical: list[str]
    prediction: str
    prediction_kind: Literal["numeric", "categorical"]

    @property
    def all_numeric(self) -> list[str]:
        return [*self.numeric, self.prediction] if self.prediction_kind == "numeric" else list(self.numeric)

    @property
    def all_categorical(self) -> list[str]:
        return [*self.categorical, self.prediction] if self.prediction_kind == "categorical" else list(self.categorical)


def monitored_columns(config: Config) -> MonitoredColumns:
    """The model's inputs (``feature_columns``) and its prediction: the score of a binary model (the calibrated
    probability served), the predicted value of a regressor, the predicted class of a multiclass model (a
    category: its probability alone would hide a change of class mix)."""
    numeric, categorical = feature_columns(config)
    if config.training.task == "multiclass":
        return MonitoredColumns(numeric, categorical, LABEL, "categorical")
    return MonitoredColumns(numeric, categorical, SCORE, "numeric")


def _categories(values: pd.Series | np.ndarray) -> np.ndarray:
    """Category texts (object), None where missing."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    present = series.notna().to_numpy()
    out = np.full(len(series), None, dtype=object)
    out[present] = series[present].map(category_text).to_numpy(dtype=object)
    return out


def monitored_frame(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """``frame``'s monitored columns only: numbers as float64 (NaN missing), categories as text (None missing)."""
    data: dict[str, np.ndarray] = {}
    for c in numeric:
        data[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    for c in categorical:
        data[c] = _categories(frame[c])
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)))
