"""The transformer: a request of entity keys + request-time fields → online features from Feast → the
predictor's input columns → scores, in the protocol the client spoke.

In one process (the embedded default) it calls the predictor object directly; on the cluster it is a
separate KServe component and calls the predictor over KServe's V2 REST/gRPC (or V1) client. Either way
the response carries the version that scored the batch, and every scored row goes to the inference log.

Only an unreachable store (connection refused or lost, a timeout, SQLite locked or unopenable) marks it
down (503 and readiness false until a probe answers); any other lookup failure is a 500 for that request
alone, its traceback logged, and an entity key its type cannot hold is the client's 400.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import Model
from kserve.logging import logger as log
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from kfloop.config import Config
from kfloop.errors import (
    FeatureLookupError,
    KfloopError,
    NotReadyError,
    OnlineStoreUnavailableError,
    PredictorUnavailableError,
    RequestError,
    UnknownEntityError,
)
from kfloop.feature_repo.online import ServingLookup
from kfloop.serving import protocol
from kfloop.serving.metrics import LOOKUP, STORE_UP, observe_grpc
from kfloop.serving.predictor import Predictor
from kfloop.serving.request_contract import CategoryGuard
from kfloop.serving.warmup import is_warmup
from kfloop.training.preprocess import category_text, feature_columns

try:  # the Redis client's own connection errors do not subclass the builtin ones
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _UNREACHABLE: tuple[type[BaseException], ...] = (OSError, _RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis comes with Feast's redis extra
    _UNREACHABLE = (OSError,)

#: SQLite's OperationalError texts that mean the database file cannot be used now (not a bad query).
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open", "disk i/o error")


def store_unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the online store cannot be reached (then it is marked down), as opposed to a
    failure of this one read. OSError covers the builtin ConnectionError and TimeoutError."""
    if isinstance(err, _UNREACHABLE):
        return True
    return isinstance(err, sqlite3.OperationalError) and any(t in str(err).lower() for t in _SQLITE_UNAVAILABLE)


@dataclass
class Batch:
    """One decoded request on its way through the transformer."""

    protocol: protocol.Protocol
    request_id: str
    request: dict[str, np.ndarray]  # entity keys + request features, as sent
    inputs: dict[str, np.ndarray]  # the model's input columns
    n: int
    defaulted: np.ndarray  # bool [n]: some view had no row for this entity, or one older than its ttl
    outputs: list[str]  # V2 outputs the client asked for (all when empty)
    version: str  # the model version the client asked for ("" = whatever is served)
    violations: np.ndarray | None = None  # str [n]: failed contract checks per row (flag mode only)


class Transformer(Model):
    """Feast online lookup in front of the predictor. ``predictor`` is the in-process predictor, or None
    when KServe's ``predictor_host`` points at a separate one."""

    def __init__(self, config: Config, lookup: ServingLookup, *, predictor: Predictor | None, log: Any = None) -> None:
        super().__init__(config.training.model_name)
        self.config = config
        self.lookup = lookup
        self.predictor = predictor
        self.log = log
        self.specs = protocol.request_specs(config)
        self.numeric, self.categorical = feature_columns(config)
        self.max_rows = config.serving.max_batch_rows
        self.reject_unknown = config.serving.unknown_entity == "reject"
        self.categories = CategoryGuard(config, self.specs)
        self.classifier = config.training.task != "regression"  # a regressor has no label output
        self.outputs = [o["name"] for o in self.get_output_types()]
        self.store_error: str | None = None
        self._lookup_errors_seen: set[str] = set()  # probe failures already logged (one line each)
        self.lookup_timeout = config.serving.lookup_timeout_seconds
        self.offload = config.features.online_store.type != "sqlite"
        STORE_UP.labels(self.name).set(1)

    # --- health ------------------------------------------------------------------------------------
    def load(self) -> bool:
        self.ready = True
        return self.ready

    def not_ready_reason(self) -> str | None:
        """Why this endpoint cannot serve now (None when it can): the online store, or the in-process
        predictor's model (not loaded, refused, inputs not matching the config)."""
        if self.store_error:
            return f"online store unreachable: {self.store_error}"
        if self.predictor is not None and self.predictor.model is None:
            return self.predictor.not_ready_reason
        return None

    async def healthy(self) -> bool:
        """Ready only with a loaded model and a reachable online store (the message says which is not)."""
        reason = self.not_ready_reason()
        if reason:
            raise NotReadyError(self.name, reason)
        return self.ready

    def probe_store(self) -> bool:
        """Read one (absent) entity through the serving path; readiness follows the answer. An error that
        is not about reaching the store is logged once and leaves readiness as it is."""
        try:
            self.lookup.get(dict.fromkeys(self.lookup.join_keys, "__kfloop_probe__"))
        except Exception as err:
            if store_unreachable(err):
                self._store_down(err)
                return False
            text = f"{type(err).__name__}: {err}"
            if text not in self._lookup_errors_seen:
                self._lookup_errors_seen.add(text)
                log.error("online store probe failed (the store answered, so it stays up): %s", text, exc_info=err)
            return self.store_error is None
        if self.store_error:
            log.warning("online store reachable again (was: %s): ready", self.store_error)
            self.store_error = None
            STORE_UP.labels(self.name).set(1)
        return True

    async def probe(self) -> bool:
        """``probe_store`` off the event loop, bounded by ``serving.lookup_timeout_seconds``."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.probe_store), self.lookup_timeout * 2)
        except TimeoutError:
            self._store_down(TimeoutError(f"no answer within {self.lookup_timeout * 2:g} s"))
            return False

    def _store_down(self, err: Exception) -> None:
        if self.store_error is None:  # one line per outage (requests meanwhile answer 503 with the reason)
            log.error("online store unreachable (%s: %s): not ready until a probe answers", type(err).__name__, err)
        self.store_error = f"{type(err).__name__}: {err}"
        STORE_UP.labels(self.name).set(0)

    @property
    def served_version(self) -> str:
        """The in-process predictor's version; "" when the predictor is remote (it answers for itself)."""
        return self.predictor.version if self.predictor is not None else ""

    # --- metadata ------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return [s.metadata() for s in self.specs]

    def get_output_types(self) -> list[dict[str, Any]]:
        multiclass = self.config.training.task == "multiclass"
        model = self.predictor.model if self.predictor is not None else None  # remote: k is the predictor's
        k = len(model.classes) if model is not None and model.classes is not None else -1
        return protocol.output_metadata(
            violations=self.categories.flag, label=self.classifier, classes=multiclass, n_classes=k
        )

    def validate(self, payload: Any) -> Any:
        return payload  # decoding validates against the request columns

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> Any:
        async with observe_grpc(self.name, body):
            return await super().__call__(body, headers, verb)

    # --- the request path ----------------------------------------------------------------------------
    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        columns, n = protocol.decode(payload, self.specs, self.max_rows)
        outputs = protocol.requested_outputs(payload, self.outputs)  # 'violations' only with flag
        kind = protocol.protocol_of(payload)
        violations = self.categories.violations(columns, n, kind)  # reject mode: the 400 is raised here
        request_id = getattr(payload, "id", None) or (headers or {}).get("x-request-id") or uuid.uuid4().hex
        start = time.perf_counter()
        features, missing = await self._lookup(columns)
        if not is_warmup(request_id):
            LOOKUP.labels(self.name).observe(time.perf_counter() - start)
        if self.reject_unknown and missing:
            key, row = next(iter(missing.items()))
            i = int(np.argmax(row))
            views = ", ".join(self.lookup.views_of(key))
            raise UnknownEntityError(
                f"unknown entity {key}={columns[key][i]!r} (row {i}): not in feature view(s) {views} of the online "
                "store, or its features there are older than the view's ttl (serving.unknown_entity is 'reject')"
            )
        defaulted = np.zeros(n, dtype=bool)
        for row in missing.values():
            defaulted |= row
        inputs: dict[str, np.ndarray] = {}
        for name in self.numeric:
            inputs[name] = columns[name] if name in columns else _numbers(features[name])
        for name in self.categorical:
            inputs[name] = _categories(columns[name]) if name in columns else _stored_categories(features[name])
        version = getattr(payload, "model_version", None) or ""
        return Batch(kind, request_id, columns, inputs, n, defaulted, outputs, version, violations)

    async def _lookup(self, columns: dict[str, np.ndarray]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
        """The batch's features. A networked store is read in a worker thread under a timeout, so a hung
        store is a 503 and never stalls the event loop (health checks, other models); a local SQLite file
        is read inline (faster than a thread hop)."""
        try:
            protos = self.lookup.key_protos({k: columns[k].tolist() for k in self.lookup.join_keys})
        except ValueError as err:
            raise RequestError(f"entity key {err}") from err
        try:
            if not self.offload:
                return self.lookup.read_batch(protos)
            return await asyncio.wait_for(asyncio.to_thread(self.lookup.read_batch, protos), self.lookup_timeout)
        except KfloopError:
            raise  # the lookup said what failed (a StorageError: 503 / UNAVAILABLE)
        except TimeoutError as err:
            self._store_down(TimeoutError(f"no answer within {self.lookup_timeout:g} s"))
            raise OnlineStoreUnavailableError(f"online store unreachable: {self.store_error}") from err
        except Exception as err:
            if store_unreachable(err):  # 503, readiness false until a probe succeeds
                self._store_down(err)
                raise OnlineStoreUnavailableError(f"online store unreachable: {self.store_error}") from err
            # this read failed, the store answered: a 500 for this request (its traceback is logged)
            raise FeatureLookupError(f"feature lookup failed: {type(err).__name__}: {err}") from err

    async def predict(self, batch: Batch, headers: dict[str, str] | None = None) -> tuple[Batch, protocol.Scores]:
        if self.predictor is not None:
            s = self.predictor.score_columns(batch.inputs, batch.n)
        else:
            s = await self._remote(batch, headers)
        scores = protocol.Scores(
            s.score, s.label, batch.defaulted, self.name, s.version, batch.violations, s.probabilities, s.classes
        )
        return batch, scores

    async def _remote(self, batch: Batch, headers: dict[str, str] | None) -> protocol.Scored:
        """Call the separate predictor (KServe's client: V1, V2 REST or gRPC as configured)."""
        if self.predictor_config is not None and self.predictor_config.protocol == "v1":
            rows = [{k: _json_value(v[i]) for k, v in batch.inputs.items()} for i in range(batch.n)]
            result = await self._call_predictor({"instances": rows}, headers)
            preds = result["predictions"]
            score = np.array([p[protocol.SCORE] for p in preds], dtype=np.float32)
            has_label = bool(preds) and protocol.LABEL in preds[0]
            label = _labels([p[protocol.LABEL] for p in preds]) if has_label else None
            probabilities, classes = None, None
            if preds and isinstance(preds[0].get(protocol.PROBABILITIES), dict):  # {class: p}, class order
                classes = tuple(preds[0][protocol.PROBABILITIES])
                table = [[p[protocol.PROBABILITIES][c] for c in classes] for p in preds]
                probabilities = np.array(table, dtype=np.float32).reshape(len(preds), len(classes))
            return protocol.Scored(score, label, str(result.get("model_version", "")), probabilities, classes)
        tensors = []
        for name, values in batch.inputs.items():
            if values.dtype == object:
                tensors.append(InferInput(name, [batch.n], "BYTES", [("" if v is None else v) for v in values]))
            else:
                tensors.append(InferInput(name, [batch.n], "FP64", values.tolist()))
        result: InferResponse = await self._call_predictor(
            InferRequest(self.name, tensors, request_id=batch.request_id), headers
        )
        version = result.model_version or (result.parameters or {}).get("model_version", "")
        if hasattr(version, "string_param"):  # a gRPC InferParameter
            version = version.string_param
        outputs = {o.name: o.as_numpy().reshape(-1) for o in result.outputs}
        label = _labels(outputs[protocol.LABEL].tolist()) if protocol.LABEL in outputs else None
        score = outputs[protocol.SCORE].astype(np.float32)
        probabilities, classes = None, None
        tensor = next((o for o in result.outputs if o.name == protocol.PROBABILITIES), None)
        if tensor is not None:
            classes = protocol.tensor_classes(tensor.parameters)
            if classes is not None:
                probabilities = tensor.as_numpy().astype(np.float32).reshape(len(score), len(classes))
        return protocol.Scored(score, label, str(version), probabilities, classes)

    async def _call_predictor(self, payload: Any, headers: dict[str, str] | None) -> Any:
        """KServe's client call; the predictor's 4xx stays the client's 4xx, anything else is a 503."""
        try:
            return await super().predict(payload, headers)
        except httpx.HTTPStatusError as err:
            status, text = err.response.status_code, err.response.text
            if 400 <= status < 500:
                raise RequestError(f"predictor refused the request ({status}): {text}") from err
            raise PredictorUnavailableError(f"predictor answered {status}: {text}") from err
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise RequestError(f"predictor refused the request: {err.details()}") from err
            raise PredictorUnavailableError(f"predictor: {err.code().name}: {err.details()}") from err
        except httpx.TransportError as err:
            raise PredictorUnavailableError(f"predictor unreachable: {type(err).__name__}: {err}") from err

    def postprocess(self, result: tuple[Batch, protocol.Scores], headers: dict[str, str] | None = None) -> Any:
        batch, scores = result
        if batch.version and batch.version != scores.model_version:
            raise UnknownEntityError(
                f"model {self.name!r} version {batch.version!r} is not served (serving {scores.model_version!r})"
            )
        if self.log is not None and not is_warmup(batch.request_id):  # the log holds what clients sent
            self.log.append(
                {
                    **batch.request,
                    **batch.inputs,
                    "score": scores.score,
                    "label": scores.label,
                    "defaulted": scores.defaulted,
                    **({} if batch.violations is None else {protocol.VIOLATIONS: batch.violations}),
                    **self._logged_probabilities(scores),
                },
                model_version=scores.model_version,
                request_id=batch.request_id,
                protocol=batch.protocol,
            )
        return protocol.encode(scores, batch.protocol, batch.request_id, batch.outputs)

    def _logged_probabilities(self, scores: protocol.Scores) -> dict[str, list]:
        """The log's ``probabilities`` column (a list per row, in the version's class order): multiclass only."""
        if scores.probabilities is None or self.config.training.task != "multiclass":
            return {}
        return {protocol.PROBABILITIES: scores.probabilities.tolist()}


def _labels(values: list) -> np.ndarray:
    """The predictor's labels: 0/1 as int64, class names (text or BYTES) as an object array."""
    if values and isinstance(values[0], str | bytes):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    return np.array(values, dtype=np.int64)


def _categories(values: np.ndarray) -> np.ndarray:
    """A request column the model takes as categories: integer codes sent as numbers become their text, the
    way the vocabulary spells them, so the predictor (in process or across the network) sees strings."""
    if values.dtype.kind in "iu":
        return np.array([str(v) for v in values.tolist()], dtype=object)
    if values.dtype.kind == "f":
        return np.array([None if math.isnan(v) else category_text(v) for v in values.tolist()], dtype=object)
    return values


def _stored_categories(values: list) -> np.ndarray:
    """A stored feature the model takes as categories, as the online lookup gives it (str, int or None): integer
    codes become their text, the way the vocabulary spells them; None (or NaN) stays missing (the unknown
    index, as is a category the training split never had)."""
    texts = [None if v is None or (isinstance(v, float) and math.isnan(v)) else category_text(v) for v in values]
    return np.array(texts, dtype=object)


def _numbers(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value
