"""A small client for the kfloop endpoint over V1 REST, V2 REST and V2 gRPC: rows of entity keys + request
fields in, one normalized result out (``kfloop predict``, tests, examples). It builds requests from the
config's request columns, so it sends exactly what the server's metadata declares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from kfloop.config import Config
from kfloop.errors import RequestError, ServingRequestError
from kfloop.serving.protocol import (
    DEFAULTED,
    LABEL,
    PROBABILITIES,
    SCORE,
    VIOLATIONS,
    ColumnSpec,
    request_specs,
    tensor_classes,
)


def v2_inputs(rows: Sequence[dict[str, Any]], specs: Sequence[ColumnSpec]) -> list[dict[str, Any]]:
    """V2 JSON inputs, one [n] tensor per column (strings BYTES, numbers FP64)."""
    out = []
    for spec in specs:
        values = [row.get(spec.name) for row in rows]
        datatype = "BYTES" if spec.kind == "string" else "FP64"
        out.append({"name": spec.name, "datatype": datatype, "shape": [len(rows)], "data": values})
    return out


def grpc_request(model: str, rows: Sequence[dict[str, Any]], specs: Sequence[ColumnSpec]) -> pb.ModelInferRequest:
    """The V2 gRPC request; a value its typed tensor cannot carry is a ``RequestError`` naming the input and
    the row, worded as the server words it for V2 REST (which sends the value as given and lets it judge)."""
    tensors = []
    for spec in specs:
        values = [row.get(spec.name) for row in rows]
        tensor = pb.ModelInferRequest.InferInputTensor(name=spec.name, shape=[len(rows)])
        if spec.kind == "string":
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(b"" if v is None else str(v).encode() for v in values)
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(_fp64(spec.name, i, v) for i, v in enumerate(values))
        tensors.append(tensor)
    return pb.ModelInferRequest(model_name=model, inputs=tensors)


def _fp64(name: str, row: int, value: Any) -> float:
    """One FP64 tensor element (null → NaN, which the server reads as null)."""
    if value is None:
        return np.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise RequestError(f"input {name!r}[{row}]: expected a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError as err:
        raise RequestError(f"input {name!r}[{row}]: {value} is too large for a number") from err


@dataclass
class ServingClient:
    """Talks to one server; ``predict`` returns {model_name, model_version, predictions: [...]}."""

    model: str
    specs: tuple[ColumnSpec, ...]
    http_base: str
    grpc_target: str
    timeout: float = 30.0
    _http: httpx.Client | None = field(default=None, repr=False)
    _channel: grpc.Channel | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._channel is not None:
            self._channel.close()

    def connect(self) -> None:
        """Open both connections now (HTTP keep-alive through a readiness call, the gRPC channel), as an
        application does at startup: the first request then measures the server, not connection setup."""
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        self._http.get(self.http_base + "/v2/health/ready")
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        grpc.channel_ready_future(self._channel).result(timeout=self.timeout)

    @classmethod
    def for_config(cls, config: Config, url: str | None = None, grpc_target: str | None = None) -> ServingClient:
        base = (url or f"http://127.0.0.1:{config.serving.http_port}").rstrip("/")
        target = grpc_target or f"127.0.0.1:{config.serving.grpc_port}"
        return cls(config.training.model_name, request_specs(config), base, target)

    def describe(self, protocol: str) -> str:
        return self.grpc_target if protocol == "grpc" else self.http_base

    def predict(
        self, rows: Sequence[dict[str, Any]], protocol: str = "v2", *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Score ``rows``; ``request_id`` is sent as V1's ``x-request-id`` header, V2's ``id`` (REST and gRPC): the
        id the inference log records for the request."""
        if protocol == "v1":
            body = self._post(f"/v1/models/{self.model}:predict", {"instances": list(rows)}, request_id)
            return {k: body.get(k) for k in ("model_name", "model_version", "predictions")}
        if protocol == "v2":
            v2 = {"inputs": v2_inputs(rows, self.specs), **({"id": request_id} if request_id else {})}
            body = self._post(f"/v2/models/{self.model}/infer", v2, request_id)
            outputs = {o["name"]: o["data"] for o in body["outputs"]}
            classes = _classes(next((o for o in body["outputs"] if o["name"] == PROBABILITIES), None))
            return _normalized(body["model_name"], body.get("model_version"), outputs, classes)
        if protocol == "grpc":
            return self._grpc(rows, request_id)
        raise ValueError(f"protocol must be v1, v2 or grpc, not {protocol!r}")

    def _post(self, path: str, body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        if self._http is None:  # one keep-alive connection per client, like an application's
            self._http = httpx.Client(timeout=self.timeout)
        headers = {"x-request-id": request_id} if request_id else None
        response = self._http.post(self.http_base + path, json=body, headers=headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServingRequestError(response.status_code, str(message))
        return response.json()

    def _grpc(self, rows: Sequence[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        request = grpc_request(self.model, rows, self.specs)
        if request_id:
            request.id = request_id
        try:
            response = stub.ModelInfer(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingRequestError(err.code().name, err.details() or "") from err
        outputs = {}
        for i, out in enumerate(response.outputs):
            if out.datatype == "BYTES":
                raw = response.raw_output_contents[i] if response.raw_output_contents else None
                values = _raw_bytes(raw) if raw is not None else list(out.contents.bytes_contents)
                outputs[out.name] = [v.decode() for v in values]
            elif response.raw_output_contents:
                dtype = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}[out.datatype]
                outputs[out.name] = np.frombuffer(response.raw_output_contents[i], dtype=dtype).tolist()
            else:
                contents = out.contents
                outputs[out.name] = list(
                    {"FP32": contents.fp32_contents, "INT64": contents.int64_contents, "BOOL": contents.bool_contents}[
                        out.datatype
                    ]
                )
        tensor = next((o for o in response.outputs if o.name == PROBABILITIES), None)
        classes = None if tensor is None else tensor_classes(tensor.parameters)
        return _normalized(response.model_name, response.model_version, outputs, classes)


def _raw_bytes(raw: bytes) -> list[bytes]:
    """A raw BYTES tensor: each element a 4-byte little-endian length, then the bytes."""
    out, i = [], 0
    while i < len(raw):
        size = int.from_bytes(raw[i : i + 4], "little")
        out.append(raw[i + 4 : i + 4 + size])
        i += 4 + size
    return out


def _classes(tensor: dict[str, Any] | None) -> tuple[str, ...] | None:
    return None if tensor is None else tensor_classes(tensor.get("parameters"))


def _normalized(
    model: str, version: str | None, outputs: dict[str, list], classes: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """One shape for every protocol (V1's): ``violations`` only when the server flags rows (V2: comma-separated);
    a multiclass model's ``probabilities`` as {class: probability} in the server's class order (V2: a flat
    row-major [n, k] tensor, its classes in the tensor's parameters)."""
    n = len(outputs[SCORE])
    labels = outputs.get(LABEL)  # absent for a regressor: its score is the prediction
    rows = zip(outputs[SCORE], labels or [None] * n, outputs.get(DEFAULTED, [False] * n), strict=True)
    predictions = [{SCORE: float(s), **_label(lab, labels is not None), DEFAULTED: bool(d)} for s, lab, d in rows]
    if VIOLATIONS in outputs:
        for prediction, violated in zip(predictions, outputs[VIOLATIONS], strict=True):
            prediction[VIOLATIONS] = violated
    if PROBABILITIES in outputs and classes:
        table = np.asarray(outputs[PROBABILITIES], dtype=np.float64).reshape(n, len(classes)).tolist()
        for prediction, row in zip(predictions, table, strict=True):
            prediction[PROBABILITIES] = dict(zip(classes, row, strict=True))
    return {"model_name": model, "model_version": version, "predictions": predictions}


def _label(value: Any, present: bool) -> dict[str, Any]:
    """A prediction's label: 0/1, a class name (multiclass), or nothing (a regressor)."""
    if not present:
        return {}
    return {LABEL: value if isinstance(value, str) else int(value)}
