"""`kfloop serve` as applications see it: a real server process on free ports, V1 REST, V2 REST and gRPC
(the standard V2 gRPC stubs), predictions equal to the offline model on the same features, a 4xx naming
the field for every client mistake (and the server keeps answering), metrics, readiness."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, ServingRequestError, grpc_request, v2_inputs
from kfloop.serving.protocol import request_specs
from kfloop.training.trainer import load_exported
from tests.serving.conftest import Server, Trained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Server:
    path = trained.write_config(tmp_path_factory.mktemp("srv") / "kfloop.json")
    srv = Server(path).start()
    yield srv
    srv.stop()


def _client(trained: Trained, server: Server) -> ServingClient:
    return ServingClient.for_config(trained.config, server.url, server.grpc_target)


def _offline_scores(trained: Trained, rows: list[dict], tmp: Path) -> np.ndarray:
    """The exported champion on features read through the Feast SDK (not the serving path)."""
    cfg = trained.config
    keys = [{k: r[k] for k in cfg.source.entity_keys} for r in rows]
    store = trained.loop.store()
    online = store.get_online_features(features=store.get_feature_service(cfg.features.service), entity_rows=keys)
    frame = pd.DataFrame(online.to_dict())
    for col in cfg.features.request_features:
        frame[col] = [r[col] for r in rows]
    registry = ModelRegistry(trained.loop.storage, cfg.training.model_name)
    predict = load_exported(registry.fetch(trained.champion, tmp))
    return predict(frame)


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_batched_predictions_equal_the_offline_model(
    trained: Trained, server: Server, protocol: str, tmp_path: Path
) -> None:
    rows = trained.request_rows(40)
    result = _client(trained, server).predict(rows, protocol)
    assert result["model_name"] == trained.config.training.model_name
    assert result["model_version"] == trained.champion
    scores = np.array([p["score"] for p in result["predictions"]])
    np.testing.assert_allclose(scores, _offline_scores(trained, rows, tmp_path), rtol=1e-5, atol=1e-6)
    threshold = ModelRegistry(trained.loop.storage, trained.config.training.model_name).get(trained.champion).card
    labels = [p["label"] for p in result["predictions"]]
    assert labels == [int(s >= threshold["threshold"]) for s in scores.astype(np.float32)]
    assert not any(p["defaulted"] for p in result["predictions"])


def test_v2_wire_format_follows_the_open_inference_protocol(trained: Trained, server: Server) -> None:
    rows = trained.request_rows(3)
    name = trained.config.training.model_name
    body = httpx.post(
        f"{server.url}/v2/models/{name}/infer",
        json={"id": "req-7", "inputs": v2_inputs(rows, request_specs(trained.config))},
    ).json()
    assert body["id"] == "req-7" and body["model_version"] == trained.champion
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["score"]["datatype"] == "FP32" and outputs["score"]["shape"] == [3]
    assert outputs["label"]["datatype"] == "INT64" and outputs["defaulted"]["datatype"] == "BOOL"

    meta = httpx.get(f"{server.url}/v2/models/{name}").json()
    assert meta["versions"] == [trained.champion]
    declared = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert declared == {s.name: ("BYTES" if s.kind == "string" else "FP64") for s in request_specs(trained.config)}
    assert [o["name"] for o in meta["outputs"]] == ["score", "label", "defaulted"]
    assert httpx.get(f"{server.url}/v2/models/{name}/ready").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v1/models/{name}").json()["ready"] is True

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name=name)).ready
        grpc_meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name))
        assert [i.name for i in grpc_meta.inputs] == list(declared)


def test_unknown_entities_are_scored_with_defaults_and_flagged(trained: Trained, server: Server) -> None:
    rows = trained.request_rows(2)
    rows[1]["customer_id"] = "c-never-seen"
    for protocol in ("v1", "v2", "grpc"):
        preds = _client(trained, server).predict(rows, protocol)["predictions"]
        assert [p["defaulted"] for p in preds] == [False, True], protocol
        assert all(0.0 <= p["score"] <= 1.0 for p in preds)


def _v1(server: Server, name: str, body: bytes | dict, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/models/{name}:predict",
        content=content,
        headers={"content-type": "application/json", **headers},
    )


def _v2(server: Server, name: str, body: bytes | dict) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v2/models/{name}/infer", content=content, headers={"content-type": "application/json"}
    )


def test_client_mistakes_get_a_4xx_naming_the_field_and_the_server_keeps_answering(
    trained: Trained, server: Server
) -> None:
    name = trained.config.training.model_name
    specs = request_specs(trained.config)
    row = trained.request_rows(1)[0]
    good_inputs = v2_inputs([row], specs)

    def v2_with(field: str, **change: object) -> dict:
        return {"inputs": [({**i, **change} if i["name"] == field else i) for i in good_inputs]}

    cases: list[tuple[str, httpx.Response, int, str]] = [
        ("malformed JSON (V1)", _v1(server, name, b'{"instances": [{"customer_id": '), 400, "Unrecognized request"),
        ("malformed JSON (V2)", _v2(server, name, b'{"inputs": [{"name": '), 400, "invalid request body"),
        ("no instances", _v1(server, name, {"rows": []}), 400, "instances"),
        ("instances not a list", _v1(server, name, {"instances": {"a": 1}}), 400, "instances"),
        (
            "missing field",
            _v1(server, name, {"instances": [{k: v for k, v in row.items() if k != "amount"}]}),
            400,
            "'amount'",
        ),
        (
            "string in numeric field",
            _v1(server, name, {"instances": [{**row, "amount": "12.5"}]}),
            400,
            "instances[0].amount",
        ),
        ("null entity key", _v1(server, name, {"instances": [{**row, "customer_id": None}]}), 400, "customer_id"),
        ("null in a non-nullable field", _v1(server, name, {"instances": [{**row, "amount": None}]}), 400, "amount"),
        ("missing input", _v2(server, name, {"inputs": good_inputs[1:]}), 400, "customer_id"),
        (
            "wrong datatype",
            _v2(server, name, v2_with("amount", datatype="BYTES", data=["12.5"])),
            400,
            "'amount': datatype",
        ),
        ("string in numeric input", _v2(server, name, v2_with("amount", data=["x"])), 400, "amount"),
        ("shape not matching data", _v2(server, name, v2_with("amount", shape=[2])), 400, "'amount': shape [2]"),
        (
            "rows differ between inputs",
            _v2(server, name, v2_with("amount", shape=[2], data=[1.0, 2.0])),
            400,
            "'amount' has 2 rows",
        ),
        ("bad shape", _v2(server, name, v2_with("amount", shape=[1, 3], data=[1.0, 2.0, 3.0])), 400, "shape"),
        ("huge integer", _v2(server, name, v2_with("amount", data=[10**400])), 400, "amount"),
        (
            "above the contract's max",
            _v1(server, name, {"instances": [{**row, "amount": 1e308}]}),
            400,
            "above the data contract's max 50000",
        ),
        (
            "below the contract's min",
            _v2(server, name, v2_with("hour_of_day", data=[-1])),
            400,
            "'hour_of_day'[0]: -1 is below",
        ),
        (
            "a category outside the contract (V1)",
            _v1(server, name, {"instances": [row, {**row, "channel": "carrier-pigeon"}]}),
            400,
            "instances[1].channel: 'carrier-pigeon' is not allowed by the data contract (channel.allowed: one of "
            "'pos', 'online', 'atm'",
        ),
        (
            "a category outside the contract (V2)",
            _v2(server, name, v2_with("channel", data=["carrier-pigeon"])),
            400,
            "input 'channel'[0]: 'carrier-pigeon' is not allowed",
        ),
        (
            "fraction in an INT tensor",
            _v2(server, name, v2_with("amount", datatype="INT32", data=[53.4])),
            400,
            "INT32 needs whole numbers",
        ),
        (
            "unknown input",
            _v2(server, name, {"inputs": [*good_inputs, {**good_inputs[2], "name": "amnt"}]}),
            400,
            "unknown input(s) 'amnt'",
        ),
        (
            "unknown output",
            _v2(server, name, {"inputs": good_inputs, "outputs": [{"name": "proba"}]}),
            400,
            "unknown output(s) 'proba'",
        ),
        ("other version", _v2(server, f"{name}/versions/v999", {"inputs": good_inputs}), 404, "'v999' is not served"),
        ("unknown model (V1)", _v1(server, "no-such-model", {"instances": [row]}), 404, "no-such-model"),
        ("unknown model (V2)", _v2(server, "no-such-model", {"inputs": good_inputs}), 404, "no-such-model"),
        ("too many rows", _v1(server, name, {"instances": [row] * 501}), 413, "at most 500"),
        ("oversize body", _v1(server, name, {"instances": [row], "pad": "x" * 300_000}), 413, "max_body_bytes"),
    ]
    problems = []
    for what, response, status, needle in cases:
        error = (
            response.json().get("error", "")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        if response.status_code != status or needle not in str(error):
            problems.append(f"{what}: {response.status_code} {error!r}")
    assert not problems, "\n".join(problems)
    assert server.alive()
    assert _client(trained, server).predict([row], "v1")["predictions"][0]["label"] in (0, 1)


def test_grpc_mistakes_get_invalid_argument_or_not_found(trained: Trained, server: Server) -> None:
    name = trained.config.training.model_name
    specs = request_specs(trained.config)
    row = trained.request_rows(1)[0]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def code(request: pb.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
            try:
                stub.ModelInfer(request, timeout=10)
            except grpc.RpcError as err:
                return err.code(), err.details()
            return grpc.StatusCode.OK, ""

        nan = grpc_request(name, [{**row, "amount": math.nan}], specs)
        inf = grpc_request(name, [{**row, "distance_from_home_km": math.inf}], specs)
        missing = grpc_request(name, [row], specs)
        del missing.inputs[0]
        wrong_type = grpc_request(name, [row], specs)
        wrong_type.inputs[0].datatype = "FP64"
        assert code(nan) == (grpc.StatusCode.INVALID_ARGUMENT, "input 'amount'[0]: must be a finite number, got nan")
        assert code(inf)[0] == grpc.StatusCode.INVALID_ARGUMENT and "distance_from_home_km" in code(inf)[1]
        assert code(missing)[0] == grpc.StatusCode.INVALID_ARGUMENT and "customer_id" in code(missing)[1]
        assert code(wrong_type)[0] == grpc.StatusCode.INVALID_ARGUMENT and "BYTES" in code(wrong_type)[1]
        pigeon = code(grpc_request(name, [{**row, "channel": "carrier-pigeon"}], specs))
        assert pigeon[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert pigeon[1].startswith("input 'channel'[0]: 'carrier-pigeon' is not allowed by the data contract")
        assert code(grpc_request("no-such-model", [row], specs))[0] == grpc.StatusCode.NOT_FOUND
        # a nullable field may be NaN (imputed like a missing value)
        assert code(grpc_request(name, [{**row, "distance_from_home_km": math.nan}], specs))[0] == grpc.StatusCode.OK
        # BYTES has no null: an empty element of a nullable string column is the null, not a refused category
        assert code(grpc_request(name, [{**row, "channel": None}], specs))[0] == grpc.StatusCode.OK
        assert code(grpc_request(name, [{**row, "channel": ""}], specs))[0] == grpc.StatusCode.OK


def test_prometheus_metrics_count_requests_by_protocol_and_status(trained: Trained, server: Server) -> None:
    client = _client(trained, server)
    rows = trained.request_rows(2)
    for protocol in ("v1", "v2", "grpc"):
        client.predict(rows, protocol)
    with pytest.raises(ServingRequestError):
        client.predict([{**rows[0], "amount": "x"}], "v1")
    text = httpx.get(f"{server.url}/metrics").text
    name = trained.config.training.model_name
    for needle in (
        f'kfloop_requests_total{{model="{name}",protocol="v1",status="200"}}',
        f'kfloop_requests_total{{model="{name}",protocol="v1",status="400"}}',
        f'kfloop_requests_total{{model="{name}",protocol="v2",status="200"}}',
        f'kfloop_requests_total{{model="{name}",protocol="grpc",status="OK"}}',
        f'kfloop_request_seconds_count{{model="{name}",protocol="grpc"}}',
        f'kfloop_feature_lookup_seconds_count{{model="{name}"}}',
        f'kfloop_model_version_info{{model="{name}",version="{trained.champion}"}} 1.0',
        f'kfloop_online_store_up{{model="{name}"}} 1.0',
    ):
        assert needle in text, needle


def test_reject_mode_answers_404_naming_the_entity(trained: Trained, start_server, tmp_path: Path) -> None:
    def reject(data: dict) -> None:
        data["serving"]["unknown_entity"] = "reject"

    srv = start_server(trained.write_config(tmp_path / "reject.json", reject))
    rows = trained.request_rows(3)
    rows[2]["merchant_id"] = "m-unknown"
    client = _client(trained, srv)
    with pytest.raises(ServingRequestError) as err:
        client.predict(rows, "v2")
    assert err.value.status == 404 and "merchant_id='m-unknown' (row 2)" in err.value.message
    assert "not in feature view(s) merchant_risk of the online store" in err.value.message
    with pytest.raises(ServingRequestError) as err:
        client.predict(rows, "grpc")
    assert err.value.status == "NOT_FOUND" and "m-unknown" in err.value.message
    assert client.predict(rows[:2], "v1")["model_version"] == trained.champion


def test_v2_binary_data_extension_decodes_or_answers_400(trained: Trained, server: Server) -> None:
    """KServe decodes binary tensors before model code; a malformed one is still the client's mistake."""
    name = trained.config.training.model_name
    row = trained.request_rows(1)[0]
    inputs = v2_inputs([row], request_specs(trained.config))
    amount = next(i for i in inputs if i["name"] == "amount")

    def binary(raw: bytes, **tensor: object) -> httpx.Response:
        meta = [{**i, "data": i["data"]} for i in inputs if i["name"] != "amount"]
        meta.append({"name": "amount", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": len(raw)}})
        for key, value in tensor.items():
            meta[-1][key] = value
        head = json.dumps({"inputs": meta}).encode()
        return httpx.post(
            f"{server.url}/v2/models/{name}/infer",
            content=head + raw,
            headers={"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"},
        )

    good = binary(np.array(amount["data"], dtype=np.float64).tobytes())
    assert good.status_code == 200, good.text
    for raw, change in ((b"\x00" * 3, {}), (b"\x00" * 16, {}), (b"\x00" * 8, {"shape": [2]})):
        bad = binary(raw, **change)
        assert bad.status_code == 400, (raw, change, bad.status_code, bad.text)
    assert server.alive()


def test_requested_outputs_and_the_served_version_url(trained: Trained, server: Server) -> None:
    name = trained.config.training.model_name
    inputs = v2_inputs(trained.request_rows(2), request_specs(trained.config))
    body = _v2(server, name, {"inputs": inputs, "outputs": [{"name": "score"}]}).json()
    assert [o["name"] for o in body["outputs"]] == ["score"]
    # 'violations' is an output only with unknown_category: flag; asking for it otherwise was a 200 without it
    refused = _v2(server, name, {"inputs": inputs, "outputs": [{"name": "violations"}]})
    assert refused.status_code == 400 and "'violations'" in refused.json()["error"], refused.text
    versioned = _v2(server, f"{name}/versions/{trained.champion}", {"inputs": inputs})
    assert versioned.status_code == 200 and versioned.json()["model_version"] == trained.champion
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = grpc_request(name, trained.request_rows(1), request_specs(trained.config))
        request.model_version = "v999"
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_raw_contents_that_do_not_decode_are_invalid_argument(trained: Trained, server: Server) -> None:
    name = trained.config.training.model_name
    specs = request_specs(trained.config)
    row = trained.request_rows(1)[0]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        good_key = struct.pack("<I", len(row["customer_id"])) + row["customer_id"].encode()
        bad_keys = (struct.pack("<I", 99) + b"c-01858", b"\x01", struct.pack("<I", 2) + b"\xff\xfe")
        for raw_key in (good_key, *bad_keys):
            request = grpc_request(name, [row], specs)
            raws = []
            for tensor in request.inputs:
                if tensor.datatype == "BYTES":
                    values = list(tensor.contents.bytes_contents)
                    raws.append(
                        raw_key
                        if tensor.name == "customer_id"
                        else b"".join(struct.pack("<I", len(v)) + v for v in values)
                    )
                else:
                    raws.append(np.array(tensor.contents.fp64_contents, dtype=np.float64).tobytes())
                tensor.ClearField("contents")
            request.raw_input_contents.extend(raws)
            if raw_key == good_key:  # typed raw tensors are a normal way to call: they score
                assert stub.ModelInfer(request, timeout=10).model_version == trained.champion
                continue
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raw_key
            assert "customer_id" in err.value.details()
