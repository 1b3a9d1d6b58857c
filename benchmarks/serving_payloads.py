"""Request bodies of the serving benchmark, encoded once: V1 and V2 JSON, V2 gRPC ``ModelInferRequest``.

A row is ``{column: value}`` with one request's values; V2 types follow the values (``str`` → BYTES,
``int`` → INT64, ``float`` → FP64), so the caller decides by building the rows (the predictor's
columns are all FP64 numbers or BYTES strings; the transformer's ``hour_of_day`` is INT64).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import kfloop.serving  # noqa: F401  (imports kserve with a neutral argv before anything else: see its docstring)
from benchmarks.serving_load import GrpcTarget, HttpTarget, PairTarget, http_request

Row = Mapping[str, Any]

#: The V2 gRPC method every server here implements.
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def _datatype(value: Any) -> str:
    if isinstance(value, str):
        return "BYTES"
    if isinstance(value, bool):
        return "BOOL"
    return "INT64" if isinstance(value, int) else "FP64"


def v1_body(row: Row) -> bytes:
    return json.dumps({"instances": [dict(row)]}).encode()


def _v2_inputs(row: Row) -> list[dict[str, Any]]:
    return [{"name": k, "shape": [1], "datatype": _datatype(v), "data": [v]} for k, v in row.items()]


def v2_body(row: Row) -> bytes:
    return json.dumps({"inputs": _v2_inputs(row)}).encode()


def grpc_message(model: str, row: Row) -> Any:
    """A ``ModelInferRequest`` (KServe's generated V2 protobuf module) for one row."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    inputs = []
    for name, value in row.items():
        datatype = _datatype(value)
        if datatype == "BYTES":
            contents = pb.InferTensorContents(bytes_contents=[value.encode()])
        elif datatype == "INT64":
            contents = pb.InferTensorContents(int64_contents=[value])
        elif datatype == "BOOL":
            contents = pb.InferTensorContents(bool_contents=[value])
        else:
            contents = pb.InferTensorContents(fp64_contents=[value])
        inputs.append(pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=[1], contents=contents))
    return pb.ModelInferRequest(model_name=model, inputs=inputs)


def rest_target(port: int, path: str, bodies: Sequence[bytes]) -> HttpTarget:
    host = "127.0.0.1"
    requests = tuple(http_request(host, port, "POST", path, b, "application/json") for b in bodies)
    return HttpTarget(host, port, requests)


def v1_target(port: int, model: str, rows: Sequence[Row]) -> HttpTarget:
    return rest_target(port, f"/v1/models/{model}:predict", [v1_body(r) for r in rows])


def v2_target(port: int, model: str, rows: Sequence[Row]) -> HttpTarget:
    return rest_target(port, f"/v2/models/{model}/infer", [v2_body(r) for r in rows])


def grpc_target(port: int, model: str, rows: Sequence[Row], channels: int = 1) -> GrpcTarget:
    messages = tuple(grpc_message(model, r).SerializeToString() for r in rows)
    return GrpcTarget(f"127.0.0.1:{port}", MODEL_INFER, messages, channels)


#: Feast's feature server route for an online lookup.
FEAST_LOOKUP = "/get-online-features"


def feast_lookup_body(service: str, keys: Row, full_names: bool = False) -> bytes:
    """Feast's ``/get-online-features`` body: the feature service's features of one entity row."""
    entities = {k: [v] for k, v in keys.items()}
    return json.dumps({"feature_service": service, "entities": entities, "full_feature_names": full_names}).encode()


def pair_target(
    lookup_port: int,
    model_port: int,
    model: str,
    lookups: Sequence[bytes],
    looked_up: Sequence[tuple[int, str, str]],
    own_rows: Sequence[Row],
) -> PairTarget:
    """Feast's feature server, then MLServer's V2 infer of ``model``: ``lookups[i]`` is request i's lookup body,
    ``looked_up`` the model inputs read from the answer (index in its results, input name, V2 datatype, as
    the model-only requests send them), ``own_rows[i]`` the request's own inputs (request features)."""
    host = "127.0.0.1"
    lookup = HttpTarget(
        host,
        lookup_port,
        tuple(http_request(host, lookup_port, "POST", FEAST_LOOKUP, b, "application/json") for b in lookups),
    )
    own = tuple(b",".join(json.dumps(i).encode() for i in _v2_inputs(row)) for row in own_rows)
    return PairTarget(lookup, host, model_port, f"/v2/models/{model}/infer", tuple(looked_up), own)


# --- answers (checked once before measuring, never in the load generator) ---------------------------


def v2_outputs(answer: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{output name: flat values} of a V2 JSON answer."""
    return {o["name"]: list(_flat(o["data"])) for o in answer["outputs"]}


def grpc_outputs(data: bytes) -> tuple[dict[str, list[Any]], str]:
    """({output name: values}, model version) of a serialized ``ModelInferResponse`` (typed or raw contents)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import InferResponse

    response = pb.ModelInferResponse.FromString(data)
    parsed = InferResponse.from_grpc(response)
    return {o.name: list(_flat(o.data)) for o in parsed.outputs}, response.model_version


def _flat(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flat(v))
        else:
            out.append(v.decode() if isinstance(v, bytes) else v)
    return out
