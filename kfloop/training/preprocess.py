"""The model's input contract: feature order, scaling and vocabularies, fitted on the training split only
and saved with the model, so serving applies exactly the transform training used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from kfloop.config import ColumnType, Config

#: Index 0 of every vocabulary: missing or unseen categories share it.
UNKNOWN = "<unknown>"


def feature_columns(config: Config) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs in a fixed order: stored features, then request features."""
    numeric = list(config.features.feature_names())
    categorical = []
    for col in config.features.request_features:
        if config.source.columns[col] is ColumnType.STRING:
            categorical.append(col)
        else:
            numeric.append(col)
    return numeric, categorical


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
        """Statistics from the training split only (never validation or test: that would leak)."""
        values = train[numeric].astype("float64")
        means = values.mean().fillna(0.0)
        stds = values.std(ddof=0).fillna(1.0).replace(0.0, 1.0)
        vocab = {c: [UNKNOWN, *sorted(str(v) for v in train[c].dropna().unique())] for c in categorical}
        return cls(numeric, categorical, [float(m) for m in means], [float(s) for s in stds], vocab)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, numeric], int64 [n, categorical]); missing numbers become the mean (0 after
        scaling), missing or unseen categories index 0."""
        num = frame[self.numeric].astype("float64").to_numpy()
        num = (num - np.asarray(self.means)) / np.asarray(self.stds)
        num = np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        cats = np.zeros((len(frame), len(self.categorical)), dtype=np.int64)
        for j, col in enumerate(self.categorical):
            index = {v: i for i, v in enumerate(self.vocabularies[col])}
            cats[:, j] = frame[col].map(lambda v, index=index: index.get(str(v), 0) if pd.notna(v) else 0).to_numpy()
        return num, cats

    def cardinalities(self) -> list[int]:
        return [len(self.vocabularies[c]) for c in self.categorical]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls(**json.loads(text))
