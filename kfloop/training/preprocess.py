"""The model's input contract: feature order, scaling and vocabularies, fitted on the training split only
and saved with the model, so serving applies exactly the transform training used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from kfloop.config import ColumnType, Config

#: Index 0 of every vocabulary: missing or unseen categories share it.
UNKNOWN = "<unknown>"
#: Up to this many rows, categories are encoded with a dict (serving); more go through pandas (training).
_SMALL = 1024
#: Standardized values are clipped here (far beyond any real value, far inside float32).
_Z_LIMIT = 1e6


def feature_columns(config: Config) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs in a fixed order, the one training and serving share: stored
    features (in ``features.feature_names()`` order), then request features. A string column is a category
    (a table's ``region``, an entity key sent as a request feature), and so is an integer one listed in
    ``features.categorical`` (a request's ``hour_of_day``, a table's ``tier`` code); the rest (aggregates, a
    table's numbers and flags) are numeric."""
    features = config.features
    numeric: list[str] = []
    categorical: list[str] = []
    stored = features.feature_types()
    typed = [(name, stored[name]) for name in features.feature_names()]
    typed += [(col, config.source.columns[col]) for col in features.request_features]
    for name, kind in typed:
        if kind is ColumnType.STRING or name in features.categorical:
            categorical.append(name)
        else:
            numeric.append(name)
    return numeric, categorical


def category_text(value: object) -> str:
    """A category as the vocabulary spells it: integer codes the same whether they arrive as ``3`` (V1 JSON,
    an int64 column) or ``3.0`` (a V2 FP64 tensor, or an int column with nulls read through pandas)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True)
class Preprocessor:
    """Standardization of numeric columns and integer encoding of categorical ones."""

    numeric: list[str]
    categorical: list[str]
    means: list[float]
    stds: list[float]
    vocabularies: dict[str, list[str]]

    @classmethod
    def fit(cls, train: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Preprocessor:
        """Statistics from the training split only (never validation or test: that would leak).
        Column by column, so memory stays at one column's copy."""
        means, stds = [], []
        for c in numeric:
            values = _numbers(train, c)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if len(values) else 0.0
            std = float(np.sqrt(((values - mean) ** 2).mean())) if len(values) else 0.0
            means.append(mean)
            stds.append(std if std > 0 and np.isfinite(std) else 1.0)
        vocab = {c: [UNKNOWN, *sorted({category_text(v) for v in pd.unique(train[c].dropna())})] for c in categorical}
        return cls(numeric, categorical, means, stds, vocab)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, numeric], int64 [n, categorical]); missing numbers become the mean (0 after
        scaling), missing or unseen categories index 0."""
        columns = {c: _numbers(frame, c) for c in self.numeric}
        columns |= {c: frame[c].to_numpy(dtype=object) for c in self.categorical}
        return self.transform_columns(columns, len(frame))

    def transform_columns(self, columns: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """``transform`` over plain arrays (numbers as float64 with NaN, categories as objects with
        None): the serving path, which has no DataFrame to build."""
        if n <= _SMALL:  # a request: one matrix operation instead of one per column
            x = np.empty((n, len(self.numeric)), dtype=np.float64)
            for j, c in enumerate(self.numeric):
                x[:, j] = columns[c]
            num = self._standardize(x, np.asarray(self.means), np.asarray(self.stds))
        else:  # training: column by column, so memory stays at one column's float64 copy
            num = np.empty((n, len(self.numeric)), dtype=np.float32)
            for j, c in enumerate(self.numeric):
                x = np.asarray(columns[c], dtype=np.float64)
                num[:, j] = self._standardize(x, self.means[j], self.stds[j])
        cats = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            if n <= _SMALL:  # a request's few rows: a dict lookup beats building pandas objects
                codes = self._codes(c)
                cats[:, j] = [0 if _missing(v) else codes.get(category_text(v), 0) for v in columns[c]]
                continue
            col = pd.Series(columns[c], dtype=object)
            present = col.notna().to_numpy()
            found = pd.Index(self.vocabularies[c]).get_indexer(col[present].map(category_text))
            cats[present, j] = np.maximum(found, 0)  # -1 (unseen) → 0 (unknown)
        return num, cats

    @staticmethod
    def _standardize(x: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
        z = (x - mean) / std
        z[~np.isfinite(z)] = 0.0
        np.clip(z, -_Z_LIMIT, _Z_LIMIT, out=z)  # a finite float64 can still overflow float32
        return z.astype(np.float32)

    def _codes(self, column: str) -> dict[str, int]:
        cache = self.__dict__.setdefault("_codes_cache", {})
        if column not in cache:
            cache[column] = {v: i for i, v in enumerate(self.vocabularies[column])}
        return cache[column]

    def cardinalities(self) -> list[int]:
        return [len(self.vocabularies[c]) for c in self.categorical]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls(**json.loads(text))
