"""The predictor: one registry version (TorchScript or SavedModel plus its ``preprocess.json`` and
``model.json`` card) as a ``kserve.Model`` over the model's input columns.

On the cluster KServe's storage initializer puts the version's files in ``/mnt/models``; locally the
server fetches them from the registry (checksums verified) into a directory of its own. Either way
``load()`` reads only that directory, so the artifact is exactly what training exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve import Model
from kserve.model import InferenceVerb

from kfloop.errors import NotReadyError, StorageError, UnknownEntityError
from kfloop.layout import CARD_FILE
from kfloop.serving import protocol
from kfloop.serving.metrics import observe_grpc
from kfloop.training import calibration, classes, model_io
from kfloop.training.calibration import Calibrator
from kfloop.training.preprocess import Preprocessor

#: The card the registry stores beside the files (threshold, version, framework).


@dataclass(frozen=True)
class LoadedModel:
    """An exported model ready to score column arrays."""

    version: str
    threshold: float
    framework: str
    preprocessor: Preprocessor
    predict_arrays: model_io.ArrayPredictor
    feature_service: str = ""  # the Feast feature service it was trained on (from the card)
    task: str = "binary"  # training.task of the card (cards from before tasks are binary)
    calibrator: Calibrator | None = None  # calibration.json of the export, applied to every score
    classes: tuple[str, ...] | None = None  # multiclass: classes.json, the class of each output column

    def score(self, columns: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities float32 [n], labels int64 [n]) with the card's decision threshold; a regressor's
        (predictions float32 [n], None)."""
        x_num, x_cat = self.preprocessor.transform_columns(columns, n)
        p = model_io.in_batches(self.predict_arrays, x_num, x_cat)
        if self.classes is not None:  # the likeliest class and its probability
            best = p.argmax(axis=1)
            names = np.array(self.classes, dtype=object)[best]
            return np.asarray(p[np.arange(len(p)), best], dtype=np.float32), names
        p = np.asarray(p if self.calibrator is None else self.calibrator.apply(p), dtype=np.float32)
        return p, None if self.task == "regression" else (p >= self.threshold).astype(np.int64)


def load_model_dir(directory: Path) -> LoadedModel:
    """Load ``directory`` (an exported version with its card); a clear StorageError when incomplete."""
    directory = Path(directory)
    try:
        card = json.loads((directory / CARD_FILE).read_text())
    except FileNotFoundError as err:
        raise StorageError(f"model directory {directory}: {CARD_FILE} is missing") from err
    except ValueError as err:
        raise StorageError(f"model directory {directory}: {CARD_FILE} is not valid JSON ({err})") from err
    preprocessor = model_io.read_preprocessor(directory)
    arrays = model_io.load_arrays(directory)
    return LoadedModel(
        version=str(card.get("version", "unknown")),
        threshold=float(card["threshold"]),
        framework=str(card.get("framework", "")),
        preprocessor=preprocessor,
        predict_arrays=arrays,
        feature_service=str((card.get("feature_service") or {}).get("name", "")),
        task=str(card.get("task", "binary")),
        calibrator=calibration.read(directory),
        classes=None if (found := classes.read(directory)) is None else tuple(found),
    )


class Predictor(Model):
    """KServe predictor over the model's input columns (V1 ``instances`` of feature objects, or V2 inputs
    named by feature). Loads in ``load()``; ``model`` is swapped whole, never mutated.

    Registered with KServe even while no valid model is loaded (``model`` None): then it answers not
    ready, with ``not_ready_reason`` on the readiness endpoints, until a valid version is served."""

    def __init__(self, name: str, model_dir: Path, *, max_rows: int) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_rows = max_rows
        self.model: LoadedModel | None = None
        self.specs: tuple[protocol.ColumnSpec, ...] = ()
        self.not_ready_reason = "the model is not loaded"
        self.ready = True  # registered; healthy() answers for the model

    def load(self) -> bool:
        self.serve(load_model_dir(self.model_dir))
        return self.ready

    def serve(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on: one reference swap, so in-flight batches keep the model they hold."""
        if not self.specs:
            self.specs = protocol.model_specs(model.preprocessor.numeric, model.preprocessor.categorical)
        self.model = model
        self.not_ready_reason = ""

    def refuse(self, reason: str) -> None:
        """Nothing valid to serve: not ready, saying why."""
        self.model = None
        self.not_ready_reason = reason

    async def healthy(self) -> bool:
        if self.model is None:
            raise NotReadyError(self.name, self.not_ready_reason)
        return self.ready

    @property
    def version(self) -> str:
        return self.model.version if self.model else ""

    @property
    def served_version(self) -> str:
        return self.version

    def get_input_types(self) -> list[dict[str, Any]]:
        return [s.metadata() for s in self.specs]

    def get_output_types(self) -> list[dict[str, Any]]:
        regression = self.model is not None and self.model.task == "regression"
        multiclass = self.model is not None and self.model.classes is not None
        outputs = protocol.output_metadata(label=not regression, classes=multiclass)
        return [o for o in outputs if o["name"] != protocol.DEFAULTED]

    def validate(self, payload: Any) -> Any:
        return payload  # decoding validates against the model's columns (protocol.decode)

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> Any:
        async with observe_grpc(self.name, body):
            return await super().__call__(body, headers, verb)

    def score_columns(self, columns: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(scores, labels or None for a regressor, version) from one consistent model (a hot switch cannot
        split a batch)."""
        model = self.model
        if model is None:
            raise NotReadyError(self.name, self.not_ready_reason)
        score, label = model.score(columns, n)
        return score, label, model.version

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        columns, n = protocol.decode(payload, self.specs, self.max_rows)
        score, label, version = self.score_columns(columns, n)
        asked = getattr(payload, "model_version", None)
        if asked and asked != version:
            raise UnknownEntityError(f"model {self.name!r} version {asked!r} is not served ({version!r} is)")
        scores = protocol.Scores(score, label, np.zeros(n, dtype=bool), self.name, version)
        served = (protocol.SCORE, protocol.LABEL) if label is not None else (protocol.SCORE,)
        outputs = protocol.requested_outputs(payload, (*served, protocol.DEFAULTED))
        return protocol.encode(scores, protocol.protocol_of(payload), getattr(payload, "id", None), outputs)
