"""A multiclass model end to end: the demo's outcome replaced by three classes (0, 1, 2: the amount's terciles),
trained, gated on macro-F1, promoted, and served over V1, V2 and gRPC, by the one-process server and by a
separate predictor behind transformers (V1, V2 REST, gRPC): ``label`` is the likeliest class (a BYTES output),
``score`` its probability, ``probabilities`` every class's (V1 {class: p}, V2 an FP32 [n, k] tensor with its
classes in the tensor's parameters), and the inference log keeps the class name and the probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from kfloop.components.evaluate import evaluate_and_gate
from kfloop.components.train import train_and_register
from kfloop.config import config_to_json
from kfloop.demo import DemoSpec, generate
from kfloop.layout import CARD_FILE
from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, grpc_request, v2_inputs
from kfloop.serving.inference_log import read_inference_log
from kfloop.serving.protocol import request_specs
from tests.feature_repo.harness import Loop, sqlite_backend
from tests.serving.conftest import Server, Trained, relaxed
from tests.serving.test_components import Component

pytestmark = pytest.mark.slow

CLASSES = ["0", "1", "2"]


def multiclass(data: dict) -> None:
    relaxed(data)
    data["training"]["task"] = "multiclass"
    data["training"]["epochs"] = 8
    data["training"]["gate"] = {"min_macro_f1": 0.3}
    data["contract"]["columns"]["is_fraud"]["max"] = 2  # three classes: 0, 1, 2


def three_classes(rows: int, seed: int) -> pd.DataFrame:
    """The demo frame with ``is_fraud`` replaced by the tercile of the amount (a request feature): 0, 1, 2."""
    frame = generate(DemoSpec(rows=rows, seed=seed)).frame
    amount = np.log1p(frame["amount"].to_numpy(dtype=float))
    frame["is_fraud"] = np.digitize(amount, np.quantile(amount, [1 / 3, 2 / 3])).astype(np.int64)
    return frame


def check_predictions(result: dict, where: str) -> np.ndarray:
    """Every prediction's probabilities: the classes in metadata order, summing to 1, argmax = label,
    score = the label's probability. Returns the [n, k] table."""
    table = []
    for i, p in enumerate(result["predictions"]):
        probabilities = p["probabilities"]
        assert list(probabilities) == CLASSES, (where, i, probabilities)
        row = np.array([probabilities[c] for c in CLASSES])
        assert abs(row.sum() - 1) < 1e-5 and (row >= 0).all(), (where, i, row)
        assert CLASSES[int(row.argmax())] == p["label"], (where, i, p)
        assert p["score"] == pytest.approx(row.max(), rel=1e-6), (where, i, p)
        table.append(row)
    return np.array(table)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The three-class model trained, gated on macro-F1 and promoted."""
    loop = Loop.create(tmp_path_factory.mktemp("multiclass") / "ws", sqlite_backend(), multiclass)
    frame = three_classes(4000, 23)
    loop.load(frame)
    loop.materialize()
    loop.training_set()
    card = train_and_register(loop.config, loop.storage, pipeline_run="multiclass-test")
    assert card["task"] == "multiclass" and card["classes"] == CLASSES
    decision = evaluate_and_gate(loop.config, loop.storage, card["version"])
    assert decision["promoted"], decision["reasons"]
    assert decision["curves"]["classes"] == CLASSES and len(decision["curves"]["confusion_matrix"]) == 3
    assert {"accuracy", "macro_f1", "log_loss", "roc_auc_2"} <= set(decision["candidate"])
    return Trained(loop, frame, card["version"])


def check_log(trained: Trained, rows: int) -> None:
    """The inference log: the class name, and the probabilities as a list in class order."""
    log = read_inference_log(trained.loop.storage, trained.config).to_pandas()
    assert len(log) >= rows and set(log["label"]) <= set(CLASSES)
    probabilities = np.array(log["probabilities"].tolist())
    assert probabilities.shape == (len(log), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert [CLASSES[i] for i in probabilities.argmax(axis=1)] == log["label"].tolist()
    np.testing.assert_allclose(probabilities.max(axis=1), log["score"], rtol=1e-6)


def test_the_one_process_server_answers_every_class_probability(served: Trained, tmp_path: Path) -> None:
    config, name = served.config, served.config.training.model_name
    rows = served.request_rows(20)
    server = Server(served.write_config(tmp_path / "kfloop.json")).start()
    try:
        client = ServingClient.for_config(config, server.url, server.grpc_target)
        results = {p: client.predict(rows, p) for p in ("v1", "v2", "grpc")}
        tables = {p: check_predictions(r, p) for p, r in results.items()}
        np.testing.assert_allclose(tables["v1"], tables["grpc"], rtol=1e-6)
        np.testing.assert_allclose(tables["v1"], tables["v2"], rtol=1e-6)
        assert len({p["label"] for p in results["v1"]["predictions"]}) > 1  # not one class for everything

        meta = httpx.get(f"{server.url}/v2/models/{name}").json()
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "score": ("FP32", [-1]),
            "label": ("BYTES", [-1]),
            "defaulted": ("BOOL", [-1]),
            "probabilities": ("FP32", [-1, 3]),
        }
        # V2 REST: the raw tensor, and requested outputs (only `label`, only `probabilities`)
        inputs = v2_inputs(rows, request_specs(config))
        infer = f"{server.url}/v2/models/{name}/infer"
        body = httpx.post(infer, json={"inputs": inputs}).json()
        tensor = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert tensor["datatype"] == "FP32" and tensor["shape"] == [20, 3]
        assert json.loads(tensor["parameters"]["classes"]) == CLASSES
        for asked in ("label", "probabilities"):
            only = httpx.post(infer, json={"inputs": inputs, "outputs": [{"name": asked}]}).json()
            assert [o["name"] for o in only["outputs"]] == [asked]
        # gRPC: requested outputs too, and the classes as a string parameter
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = grpc_request(name, rows, request_specs(config))
            request.outputs.add(name="label")
            assert [o.name for o in stub.ModelInfer(request, timeout=30).outputs] == ["label"]
            del request.outputs[:]
            request.outputs.add(name="probabilities")
            answer = stub.ModelInfer(request, timeout=30)
            assert [o.name for o in answer.outputs] == ["probabilities"] and list(answer.outputs[0].shape) == [20, 3]
            assert json.loads(answer.outputs[0].parameters["classes"].string_param) == CLASSES
    finally:
        assert server.stop() == 0
    check_log(served, 20 * 3)


def test_a_separate_predictor_carries_the_probabilities_over_v1_v2_and_grpc(served: Trained, tmp_path: Path) -> None:
    config, name = served.config, served.config.training.model_name
    registry = ModelRegistry(served.loop.storage, name)
    model_dir = registry.fetch(served.champion, tmp_path / "mnt-models")
    (model_dir / CARD_FILE).write_text(json.dumps(registry.get(served.champion).card, default=str))
    env = {"KFLOOP_CONFIG_JSON": config_to_json(config)}
    predictor = Component(["predictor", "--model_dir", str(model_dir)], env, tmp_path / "predictor.log")
    started = [predictor]
    rows = served.request_rows(20, start=40)
    tables = []
    try:
        predictor.wait_ready()
        meta = httpx.get(f"http://127.0.0.1:{predictor.http_port}/v2/models/{name}").json()
        assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]} in meta["outputs"]
        ports = {"v1": predictor.http_port, "v2": predictor.http_port, "grpc-v2": predictor.grpc_port}
        for protocol, port in ports.items():
            args = ["transformer", "--model_name", name]
            args += ["--predictor_host", f"127.0.0.1:{port}", "--predictor_protocol", protocol]
            started.append(Component(args, env, tmp_path / f"transformer-{protocol}.log"))
        for transformer in started[1:]:
            transformer.wait_ready()
            client = ServingClient.for_config(
                config, f"http://127.0.0.1:{transformer.http_port}", f"127.0.0.1:{transformer.grpc_port}"
            )
            for protocol in ("v1", "v2", "grpc"):
                tables.append(check_predictions(client.predict(rows, protocol), f"{transformer.log.name} {protocol}"))
    finally:
        for component in started:
            component.stop()
    for table in tables[1:]:
        np.testing.assert_allclose(table, tables[0], rtol=1e-6)
    check_log(served, 20 * 9)
