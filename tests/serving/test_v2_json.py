"""The V2 REST fast path builds what KServe builds: the same ``InferRequest`` from a plain JSON body as KServe's
pydantic route, the same JSON answer as KServe's encoder, and ``None`` (KServe's route answers) for every body
that is not plain."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.encoders import jsonable_encoder
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse

from kfloop.serving import protocol
from kfloop.serving.v2_json import plain_request, plain_response

PLAIN = [
    {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [12.5]}]},
    {
        "id": "req-1",
        "parameters": {"a": 1, "b": 2.5, "c": True, "d": "x"},
        "inputs": [
            {"name": "customer_id", "shape": [2], "datatype": "BYTES", "data": ["c-1", "c-2"]},
            {"name": "hour", "shape": [2, 1], "datatype": "int64", "data": [[3], [4]], "parameters": {"p": "q"}},
        ],
        "outputs": [{"name": "score"}, {"name": "label", "parameters": {"binary_data": False}}],
    },
    {"inputs": [], "outputs": []},
    {"inputs": [{"name": "x", "shape": [0], "datatype": "FP16", "data": []}], "extra": "ignored"},
]
NOT_PLAIN = [
    b'{"inputs": [{"name": ',  # not JSON
    b"[1, 2]",
    b'{"inputs": {"name": "x"}}',
    b'{"id": 7, "inputs": []}',
    b'{"inputs": [{"name": "x", "shape": ["1"], "datatype": "FP64", "data": [1.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [1.0], "datatype": "FP64", "data": [1.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [true], "datatype": "FP64", "data": [1.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": 1.0}]}',
    b'{"inputs": [{"name": 3, "shape": [1], "datatype": "FP64", "data": [1.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64"}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0], "parameters": {"a": null}}]}',
    b'{"inputs": [], "parameters": {"a": [1]}}',
    b'{"inputs": [], "outputs": {"name": "score"}}',
    b'{"inputs": [], "outputs": [{"label": "score"}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [NaN]}]}',  # stdlib JSON takes it
]


def _attrs(request: InferRequest) -> dict[str, Any]:
    outputs = [(o.name, o.parameters) for o in request.request_outputs or ()]
    inputs = [(i.name, i.shape, i.datatype, i.data, i.parameters) for i in request.inputs]
    return {
        "id": request.id,
        "model": request.model_name,
        "parameters": request.parameters,
        "inputs": inputs,
        "outputs": outputs or None,
    }


@pytest.mark.parametrize("body", PLAIN, ids=range(len(PLAIN)))
def test_a_plain_body_becomes_the_infer_request_kserve_builds(body: dict) -> None:
    ours = plain_request(json.dumps(body).encode(), "m")
    theirs = InferRequest.from_inference_request(InferenceRequest.model_validate(body), "m")
    assert ours is not None and _attrs(ours) == _attrs(theirs)


@pytest.mark.parametrize("body", NOT_PLAIN, ids=range(len(NOT_PLAIN)))
def test_any_other_body_is_left_to_kserve(body: bytes) -> None:
    assert plain_request(body, "m") is None


def _kserve_json(response: InferResponse) -> Any:
    """What KServe's V2 REST route answers: to_rest → pydantic → FastAPI's encoder."""
    rest, _ = response.to_rest()
    return jsonable_encoder(InferenceResponse.model_validate(rest))


SCORES = [
    protocol.Scores(np.array([0.123456789, 0.9]), np.array([0, 1]), np.array([False, True]), "m", "v3"),
    protocol.Scores(np.array([2.5]), None, np.array([True]), "m", "v1", violations=np.array(["", "a.allowed"])[:1]),
    protocol.Scores(
        np.array([0.7]),
        np.array(["cat"], dtype=object),
        np.array([False]),
        "m",
        "v2",
        probabilities=np.array([[0.7, 0.2, 0.1]]),
        classes=("cat", "dog", "a,b"),
    ),
]


@pytest.mark.parametrize("scores", SCORES, ids=["binary", "regression+violations", "multiclass"])
def test_the_answer_is_kserves_json(scores: protocol.Scores) -> None:
    for outputs in ((), ("score",)):
        response = protocol.encode(scores, "v2", "req-9", outputs)
        expected = _kserve_json(protocol.encode(scores, "v2", "req-9", outputs))
        body = plain_response(response)
        assert body is not None and orjson.loads(body) == expected


def test_binary_outputs_are_left_to_kserve() -> None:
    response = protocol.encode(SCORES[0], "v2", "r", ())
    response._use_binary_outputs = True
    assert plain_response(response) is None
    numpy_data = InferResponse("r", "m", [protocol.InferOutput("score", [1], "FP32", np.array([0.5], np.float32))])
    assert plain_response(numpy_data) is None
