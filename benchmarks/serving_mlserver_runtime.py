"""The peer of the serving benchmark: an MLServer custom runtime serving the SAME exported model version
(TorchScript ``model.pt`` + ``preprocess.json`` + the ``model.json`` card's threshold).

It is what a user of MLServer would write: V2 inputs named by feature in, the training preprocessing
(standardize numbers, NaN → mean; categories → vocabulary index, unseen → 0) re-implemented on numpy,
the TorchScript forward, the export's probability calibration (``calibration.json``: Platt or isotonic,
blended with the raw score by its tie break), ``score`` (FP32) and ``label`` (INT64) out. It has no Feast
lookup.

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
        path = directory / "calibration.json"
        self._calibration = json.loads(path.read_text()) if path.is_file() else None
        return True

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        c = self._calibration
        if c is None:
            return p
        p = p.astype(np.float64)
        if c["method"] == "platt":
            a, b = c["params"]
            q = np.clip(p, 1e-7, 1 - 1e-7)
            out = 1.0 / (1.0 + np.exp(-(a * np.log(q / (1 - q)) + b)))
        else:
            out = np.interp(p, c["x"], c["y"])
        t = float(c.get("tie_break", 0.0))
        return (1.0 - t) * out + t * np.clip(p, 0.0, 1.0) if t else out

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
        with torch.inference_mode():  # as ours: no autograd bookkeeping at all
            p = self._module(torch.from_numpy(z.astype(np.float32)), torch.from_numpy(x_cat)).numpy()
        score = self._calibrate(p.reshape(n)).astype(np.float32)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("score", score),
                NumpyCodec.encode_output("label", (score >= self._threshold).astype(np.int64)),
            ],
        )
