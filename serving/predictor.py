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
from kfloop.serving.warmup import warm_model
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
        (predictions float32 [n], None); a multiclass model's (the likeliest class's probability, its name)."""
        scored = self.score_all(columns, n)
        return scored.score, scored.label

    def score_all(self, columns: dict[str, np.ndarray], n: int) -> protocol.Scored:
        """``score``, plus a multiclass model's probability of every class (float32 [n, k], class order)."""
        x_num, x_cat = self.preprocessor.transform_columns(columns, n)
        p = model_io.in_batches(self.predict_arrays, x_num, x_cat)
        if self.classes is not None:  # the likeliest class and its probability
            probabilities = np.asarray(p, dtype=np.float32).reshape(len(p), len(self.classes))
            best = probabilities.argmax(axis=1)  # of what the client sees: argmax(probabilities) is the label
            names = np.array(self.classes, dtype=object)[best]
            score = probabilities[np.arange(len(p)), best]
            return protocol.Scored(score, names, self.version, probabilities, self.classes)
        p = np.asarray(p if self.calibrator is None else self.calibrator.apply(p), dtype=np.float32)
        label = None if self.task == "regression" else (p >= self.threshold).astype(np.int64)
        return protocol.Scored(p, label, self.version)


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
        model = load_model_dir(self.model_dir)
        warm_model(model)
        self.serve(model)
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
        model = self.model
        regression = model is not None and model.task == "regression"
        k = -1 if model is None or model.classes is None else len(model.classes)
        outputs = protocol.output_metadata(label=not regression, classes=k > 0, n_classes=k)
        return [o for o in outputs if o["name"] != protocol.DEFAULTED]

    def validate(self, payload: Any) -> Any:
        return payload  # decoding validates against the model's columns (protocol.decode)

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> Any:
        async with observe_grpc(self.name, body):
            return await super().__call__(body, headers, verb)

    def score_columns(self, columns: dict[str, np.ndarray], n: int) -> protocol.Scored:
        """Scores, labels (None for a regressor), a multiclass model's class probabilities and the version,
        from one consistent model (a hot switch cannot split a batch)."""
        model = self.model
        if model is None:
            raise NotReadyError(self.name, self.not_ready_reason)
        return model.score_all(columns, n)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        columns, n = protocol.decode(payload, self.specs, self.max_rows)
        s = self.score_columns(columns, n)
        version = s.version
        asked = getattr(payload, "model_version", None)
        if asked and asked != version:
            raise UnknownEntityError(f"model {self.name!r} version {asked!r} is not served ({version!r} is)")
        scores = protocol.Scores(
            s.score, s.label, np.zeros(n, dtype=bool), self.name, version, None, s.probabilities, s.classes
        )
        served = (protocol.SCORE, protocol.LABEL) if s.label is not None else (protocol.SCORE,)
        if s.probabilities is not None:
            served = (*served, protocol.PROBABILITIES)
        outputs = protocol.requested_outputs(payload, (*served, protocol.DEFAULTED))
        return protocol.encode(scores, protocol.protocol_of(payload), getattr(payload, "id", None), outputs)
