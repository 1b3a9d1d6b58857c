"""V2 (Open Inference Protocol) REST JSON ↔ KServe's ``InferRequest`` / ``InferResponse``, without pydantic.

KServe validates every V2 JSON body against its pydantic ``InferenceRequest`` and copies it into an
``InferRequest``; the answer goes ``InferResponse.to_rest()`` (a numpy round trip per output) → a pydantic
``InferenceResponse`` → FastAPI's ``jsonable_encoder``. For a one-row request that was about 0.3 ms, more
than the model's own work. Here a *plain* body (JSON whose every field has the type KServe's model declares)
becomes the same ``InferRequest`` after one ``orjson.loads`` and a type check per field, and a plain answer
(JSON outputs, no binary extension) the same JSON with one ``orjson.dumps``.

Whatever is not plain gets ``None``, and the caller hands it to KServe's own route: a body pydantic would
coerce or refuse, the binary extension, FP16 data. So KServe still decides every answer, 4xx included, that
this module does not produce identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

__all__ = ["plain_request", "plain_response"]

#: The V2 parameter value types (KServe's ``Parameters``: StrictFloat | StrictInt | StrictBool | str).
_PARAMETER_TYPES = frozenset({str, int, float, bool})
#: JSON element type of each datatype an answer may carry as JSON (FP32: rounded to float32, as KServe does).
_ELEMENT = {
    "BOOL": bool,
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"), int),
    "FP32": float,
    "FP64": float,
    "BYTES": str,
}


def _parameters_ok(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return all(type(k) is str and type(v) in _PARAMETER_TYPES for k, v in value.items())


def plain_request(body: bytes, model_name: str) -> InferRequest | None:
    """The ``InferRequest`` KServe builds from this V2 JSON ``body`` for ``model_name``; None when the body is
    not plain (not JSON, or a field pydantic would coerce or refuse): KServe's route must answer it."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # KServe's route answers it (its JSON parser also takes NaN and huge integers)
    if type(obj) is not dict:
        return None
    request_id, parameters, inputs = obj.get("id"), obj.get("parameters"), obj.get("inputs")
    if (request_id is not None and type(request_id) is not str) or type(inputs) is not list:
        return None
    if not _parameters_ok(parameters):
        return None
    tensors = []
    for item in inputs:
        if type(item) is not dict:
            return None
        name, shape, datatype, data = item.get("name"), item.get("shape"), item.get("datatype"), item.get("data")
        tensor_parameters = item.get("parameters")
        if type(name) is not str or type(datatype) is not str or type(data) is not list or type(shape) is not list:
            return None
        if any(type(d) is not int for d in shape) or not _parameters_ok(tensor_parameters):
            return None
        if datatype == "FP16" and data:
            return None  # KServe refuses FP16 as JSON, in its own words
        tensors.append(InferInput(name, shape, datatype, data, {} if tensor_parameters is None else tensor_parameters))
    outputs = obj.get("outputs")
    requested = None
    if outputs is not None:
        if type(outputs) is not list:
            return None
        for item in outputs:
            if type(item) is not dict or type(item.get("name")) is not str:
                return None
            if not _parameters_ok(item.get("parameters")):
                return None
        if outputs:  # as KServe's from_inference_request: an empty list asks for every output
            requested = [RequestedOutput(o["name"], o.get("parameters") or {}) for o in outputs]
    return InferRequest(
        model_name=model_name,
        infer_inputs=tensors,
        request_id=request_id,
        parameters=parameters,
        request_outputs=requested,
    )


def _plain_output(output: InferOutput) -> dict[str, Any] | None:
    data, kind = output.data, _ELEMENT.get(output.datatype)
    if kind is None or output._raw_data is not None or type(data) is not list:
        return None
    if any(type(v) is list for v in data):
        return None  # nested: KServe's to_rest flattens it
    if output.datatype == "FP32":
        values = np.asarray(data, dtype=np.float32).tolist()
    elif kind is str:
        values = [v.decode() if type(v) is bytes else str(v) for v in data]
    else:
        values = [kind(v) for v in data]
    parameters = output.parameters
    if parameters:
        parameters = {k: v for k, v in dict(parameters).items() if k != "binary_data_size"}
    return {
        "name": output.name,
        "shape": list(output.shape),
        "datatype": output.datatype,
        "parameters": parameters or None,
        "data": values,
    }


def plain_response(response: InferResponse) -> bytes | None:
    """The JSON KServe's V2 REST route answers for ``response`` (same fields and values); None when it is not
    plain (binary outputs, raw data, nested or FP16 data, parameters that are not plain values): KServe's
    encoder must answer it."""
    if response._use_binary_outputs or response._requested_outputs or type(response.id) is not str:
        return None
    outputs = []
    for output in response.outputs:
        plain = _plain_output(output)
        if plain is None or not _parameters_ok(plain["parameters"]):
            return None
        outputs.append(plain)
    parameters = dict(response.parameters) if response.parameters else None
    if not _parameters_ok(parameters):
        return None
    return orjson.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "parameters": parameters,
            "outputs": outputs,
        }
    )
