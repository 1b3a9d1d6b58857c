"""The peer of the serving benchmark: an MLServer custom runtime serving the SAME exported model version
(TorchScript ``model.pt`` + ``preprocess.json`` + the ``model.json`` card's threshold).

It is what a user of MLServer would write: V2 inputs named by feature in, the training preprocessing
(standardize numbers, NaN → mean; categories → vocabulary index, unseen → 0) re-implemented on numpy,
the TorchScript forward, ``score`` (FP32) and ``label`` (INT64) out. It has no Feast lookup.

Runs inside MLServer's own venv (``.bench/mlserver-venv``): imports only mlserver, numpy and torch,
never kfloop. The model directory comes from the model settings' ``parameters.uri``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class FraudModel(MLModel):
    """Scores rows of the model's input columns with one registry version's exported files."""

    async def load(self) -> bool:
        directory = Path(self.settings.parameters.uri)  # type: ignore[union-attr]
        pre = json.loads((directory / "preprocess.json").read_text())
        self._numeric: list[str] = pre["numeric"]
        self._categorical: list[str] = pre["categorical"]
        self._means = np.asarray(pre["means"], dtype=np.float64)
        self._stds = np.asarray(pre["stds"], dtype=np.float64)
        self._vocab = {c: {v: i for i, v in enumerate(words)} for c, words in pre["vocabularies"].items()}
        self._threshold = float(json.loads((directory / "model.json").read_text())["threshold"])
        self._module = torch.jit.load(str(directory / "model.pt"), map_location="cpu")
        self._module.eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: i for i in payload.inputs}
        n = int(inputs[self._numeric[0]].shape[0])
        raw = np.empty((n, len(self._numeric)), dtype=np.float64)
        for j, name in enumerate(self._numeric):
            raw[:, j] = NumpyCodec.decode_input(inputs[name]).reshape(n)
        z = (raw - self._means) / self._stds
        z[~np.isfinite(z)] = 0.0
        x_cat = np.zeros((n, len(self._categorical)), dtype=np.int64)
        for j, name in enumerate(self._categorical):
            words = self._vocab[name]
            x_cat[:, j] = [words.get(v, 0) for v in StringCodec.decode_input(inputs[name])]
        with torch.no_grad():
            p = self._module(torch.from_numpy(z.astype(np.float32)), torch.from_numpy(x_cat)).numpy()
        score = p.astype(np.float32).reshape(n)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("score", score),
                NumpyCodec.encode_output("label", (score >= self._threshold).astype(np.int64)),
            ],
        )
