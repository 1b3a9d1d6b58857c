"""A multiclass model's ``probabilities`` in every protocol, without a server: V1 {class: p} per prediction,
V2 REST and gRPC an FP32 [n, k] tensor whose ``classes`` parameter names the columns, requested outputs
filtering it, the Python client normalizing all three alike, the model metadata declaring it, the inference
log's list column; binary and regression answers unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from kserve.protocol.infer_type import InferResponse

from kfloop.serving import protocol
from kfloop.serving._log_encoder import encode as encode_log
from kfloop.serving._log_encoder import record
from kfloop.serving.client import _normalized
from kfloop.serving.log_sink import decode_response
from kfloop.serving.log_table import PROBABILITIES, inference_log_schema
from tests.feature_repo.harness import feature_config, sqlite_backend

CLASSES = ("high", "low", "mid")
P = np.array([[0.7, 0.1, 0.2], [0.05, 0.15, 0.8]], dtype=np.float32)


def multiclass_scores() -> protocol.Scores:
    best = P.argmax(axis=1)
    label = np.array(CLASSES, dtype=object)[best]
    score = P[np.arange(2), best]
    return protocol.Scores(score, label, np.zeros(2, dtype=bool), "m", "7", None, P, CLASSES)


def test_v1_gives_each_prediction_its_probabilities_by_class_in_class_order() -> None:
    body = protocol.encode(multiclass_scores(), "v1", "r")
    first, second = body["predictions"]
    assert list(first["probabilities"]) == list(CLASSES)
    assert first["label"] == "high" and second["label"] == "mid"
    for prediction in body["predictions"]:
        p = prediction["probabilities"]
        assert abs(sum(p.values()) - 1) < 1e-6 and max(p, key=p.get) == prediction["label"]
        assert prediction["score"] == p[prediction["label"]]


def test_v2_rest_and_grpc_carry_an_fp32_n_by_k_tensor_named_by_its_classes_parameter() -> None:
    rest, _ = protocol.encode(multiclass_scores(), "v2", "r").to_rest()
    tensor = next(o for o in rest["outputs"] if o["name"] == "probabilities")
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [2, 3]
    assert json.loads(tensor["parameters"]["classes"]) == list(CLASSES)
    np.testing.assert_allclose(np.array(tensor["data"]).reshape(2, 3), P)

    message = protocol.encode(multiclass_scores(), "grpc", "r").to_grpc()
    back = InferResponse.from_grpc(message)
    tensor = next(o for o in back.outputs if o.name == "probabilities")
    assert protocol.tensor_classes(tensor.parameters) == CLASSES
    np.testing.assert_allclose(tensor.as_numpy().reshape(2, 3), P)
    assert protocol.tensor_classes(InferResponse.from_rest(rest).outputs[-1].parameters) == CLASSES

    # the Python client: every protocol normalized to V1's {class: p}
    outputs = {o["name"]: o["data"] for o in rest["outputs"]}
    normalized = _normalized("m", "7", outputs, CLASSES)
    v1 = protocol.encode(multiclass_scores(), "v1", "r")
    assert normalized["predictions"] == v1["predictions"]


def test_requested_outputs_filter_the_probabilities_like_any_output() -> None:
    only_label = protocol.encode(multiclass_scores(), "v2", "r", ["label"])
    assert [o.name for o in only_label.outputs] == ["label"]
    only_p = protocol.encode(multiclass_scores(), "grpc", "r", ["probabilities"]).to_grpc()
    assert [o.name for o in only_p.outputs] == ["probabilities"] and list(only_p.outputs[0].shape) == [2, 3]


def test_binary_and_regression_answers_are_unchanged() -> None:
    binary = protocol.Scores(np.array([0.9], np.float32), np.array([1]), np.zeros(1, bool), "m", "1")
    assert protocol.encode(binary, "v1", "r")["predictions"] == [
        {"score": 0.8999999761581421, "label": 1, "defaulted": False}
    ]
    assert [o.name for o in protocol.encode(binary, "v2", "r").outputs] == ["score", "label", "defaulted"]
    regression = protocol.Scores(np.array([3.0], np.float32), None, np.zeros(1, bool), "m", "1")
    assert [o.name for o in protocol.encode(regression, "grpc", "r").outputs] == ["score", "defaulted"]
    assert [o["name"] for o in protocol.output_metadata()] == ["score", "label", "defaulted"]
    assert [o["name"] for o in protocol.output_metadata(violations=True, label=False)] == [
        "score",
        "defaulted",
        "violations",
    ]


def test_the_metadata_declares_the_probabilities_with_k_columns() -> None:
    outputs = protocol.output_metadata(classes=True, n_classes=3)
    assert outputs[-1] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    assert protocol.output_metadata(classes=True)[-1]["shape"] == [-1, -1]  # k unknown (a remote predictor)


def test_the_inference_log_keeps_the_probabilities_as_a_list_column(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["training"]["task"] = "multiclass"
        data["training"]["gate"] = {"min_macro_f1": 0.1}

    config = feature_config(tmp_path / "ws", sqlite_backend(), edit)
    schema = inference_log_schema(config)
    assert schema.field(PROBABILITIES).type == pa.list_(pa.float64())
    assert PROBABILITIES not in inference_log_schema(feature_config(tmp_path / "ws2", sqlite_backend())).names

    columns: list = [None] * (len(schema) - 4)
    names = schema.names[4:]
    columns[names.index("score")] = [0.7, 0.8]
    columns[names.index("label")] = ["high", "mid"]
    columns[names.index(PROBABILITIES)] = P.tolist()
    days, rejected = encode_log(schema, [record((0, "r", "7", "v1", 2, tuple(columns)))])
    assert not rejected
    back = pq.read_table(pa.BufferReader(days[0].parquet))
    np.testing.assert_allclose(np.array(back.column(PROBABILITIES).to_pylist()), P)


def test_the_log_sink_reads_the_probabilities_of_v1_and_v2_responses() -> None:
    v1 = protocol.encode(multiclass_scores(), "v1", "r")
    v2, _ = protocol.encode(multiclass_scores(), "v2", "r").to_rest()
    for body in (v1, v2):
        columns, rows, version = decode_response(body, probabilities=True)
        assert rows == 2 and version == "7" and columns["label"] == ["high", "mid"]
        np.testing.assert_allclose(np.array(columns[PROBABILITIES]), P)
        assert PROBABILITIES not in decode_response(body)[0]  # a log without the column (not multiclass)
