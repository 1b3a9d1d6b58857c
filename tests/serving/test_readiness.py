"""Real `kfloop serve` processes when something is wrong: a champion whose inputs do not match the config
(not ready, with the reason on every readiness endpoint; refused at a switch while the old one serves),
a registry that cannot be read during a switch (retried, then switched), a request value outside the
data contract's allowed values (400 with reject, a flagged row with flag), and a feature lookup that fails
for another reason than an unreachable store (a 500 for that request; the store stays up)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient, ServingRequestError
from kfloop.serving.inference_log import read_inference_log
from tests.serving.conftest import Server, Trained
from tests.serving.test_lifecycle import _register_copy

pytestmark = pytest.mark.slow


def _eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextmanager
def _champion_restored(trained: Trained) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(trained.loop.storage, trained.config.training.model_name)
    try:
        yield registry
    finally:
        registry.promote(trained.champion, "restore the champion for other tests")


def test_a_champion_whose_inputs_do_not_match_the_config_is_not_ready_with_the_reason(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    def without_channel(data: dict) -> None:
        data["features"]["request_features"] = [c for c in data["features"]["request_features"] if c != "channel"]

    server = start_server(trained.write_config(tmp_path / "fewer.json", without_channel), ready=False)
    name = trained.config.training.model_name
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    reason = ready.json()["error"]
    assert "inputs do not match the config" in reason and "channel" in reason and trained.champion in reason
    for path in (f"/v2/models/{name}/ready", f"/v1/models/{name}", f"/v2/models/{name}-predictor/ready"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 503 and "channel" in answer.json()["error"], (path, answer.text)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready is False
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelReady(pb.ModelReadyRequest(name=name))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "channel" in err.value.details()
    row = {k: v for k, v in trained.request_rows(1)[0].items() if k != "channel"}
    scored = httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": [row]})
    assert scored.status_code == 503 and "channel" in scored.json()["error"]
    output = server.log_path.read_text()
    assert f"refused {name} version {trained.champion} (inputs)" in output
    assert "NotReadyError" not in output  # said once above, not as a traceback per probe and request
    metrics = httpx.get(f"{server.url}/metrics").text
    refused = f'kfloop_model_refused_total{{model="{name}",reason="inputs",version="{trained.champion}"}} 1.0'
    assert refused in metrics


def test_a_mismatching_new_champion_is_refused_and_the_old_one_keeps_serving(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    with _champion_restored(trained) as registry:
        other = _register_copy(
            registry, registry, trained.champion, feature_service={"name": "other_features", "version": "x"}
        )
        registry.promote(other, "trained on another feature service")
        _eventually(lambda: f"version {other} (inputs)" in server.log_path.read_text(), what="the refusal in the log")
        assert "still serving " + trained.champion in server.log_path.read_text()
        assert client.predict(trained.request_rows(2), "v1")["model_version"] == trained.champion
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def _set_champion(trained: Trained, version: str) -> None:
    """What a promotion writes, without its verification (the version's files are away on purpose)."""
    key = f"registry/{trained.config.training.model_name}/stages.json"
    stages = json.loads(trained.loop.storage.read_text(key))
    stages["champion"], stages["versions"][version] = version, "champion"
    trained.loop.storage.write_text(key, json.dumps(stages))


def test_an_unreadable_registry_during_a_switch_is_retried_and_the_switch_follows_recovery(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    def fast_backoff(data: dict) -> None:
        data["serving"]["reload_max_seconds"] = 2.0

    server = start_server(trained.write_config(tmp_path / "kfloop.json", fast_backoff))
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    rows = trained.request_rows(2)
    with _champion_restored(trained) as registry:
        new = _register_copy(registry, registry, trained.champion, threshold=0.0)
        folder = trained.loop.workspace / "registry" / trained.config.training.model_name / new
        away = folder.with_name(new + ".away")
        folder.rename(away)  # the storage cannot serve the version's files for a while
        try:
            _set_champion(trained, new)
            _eventually(
                lambda: (
                    f"cannot load {new} yet" in server.log_path.read_text()
                    or "cannot load the champion yet" in server.log_path.read_text()
                ),
                what="a retry in the log",
            )
            time.sleep(3)  # several retries
            assert client.predict(rows, "v2")["model_version"] == trained.champion
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        finally:
            away.rename(folder)
        _eventually(lambda: client.predict(rows, "v1")["model_version"] == new, what="the switch after recovery")
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'kfloop_model_refused_total{{model="{trained.config.training.model_name}"' not in metrics
        assert all(p["label"] == 1 for p in client.predict(rows, "grpc")["predictions"])


def test_unknown_categories_are_flagged_in_the_response_and_the_log_with_flag(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    def flag(data: dict) -> None:
        data["serving"]["unknown_category"] = "flag"

    server = start_server(trained.write_config(tmp_path / "flag.json", flag))
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    rows = trained.request_rows(2)
    rows[1] = {**rows[1], "channel": "carrier-pigeon"}
    for protocol in ("v1", "v2", "grpc"):
        preds = client.predict(rows, protocol)["predictions"]
        assert [p["violations"] for p in preds] == ["", "channel.allowed"], protocol
        assert all(0.0 <= p["score"] <= 1.0 for p in preds)
    name = trained.config.training.model_name
    outputs = [o["name"] for o in httpx.get(f"{server.url}/v2/models/{name}").json()["outputs"]]
    assert outputs == ["score", "label", "defaulted", "violations"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'kfloop_contract_violations_total{{check="channel.allowed",model="{name}"}} 3.0' in metrics
    server.stop()
    log = read_inference_log(trained.loop.storage, trained.config).to_pylist()
    flagged = [r["violations"] for r in log if r["channel"] == "carrier-pigeon"]
    assert flagged == ["channel.allowed"] * 3
    assert {r["violations"] for r in log if r["request_id"] and r["channel"] != "carrier-pigeon"} <= {"", None}


def test_a_lookup_failure_that_is_not_about_reaching_the_store_is_a_500_and_the_store_stays_up(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server(trained.write_config(tmp_path / "kfloop.json"))
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    rows = trained.request_rows(2)
    name = trained.config.training.model_name
    db = trained.loop.store().config.online_store.path
    feature = trained.config.features.feature_names()[0]
    with sqlite3.connect(db) as conn:
        table = next(
            t
            for (t,) in conn.execute("select name from sqlite_master where type = 'table'")
            if conn.execute(f"select count(*) from {t} where feature_name = ?", (feature,)).fetchone()[0]
        )
        saved = conn.execute(f"select rowid, value from {table} where feature_name = ?", (feature,)).fetchall()
        conn.execute(f"update {table} set value = x'ff' where feature_name = ?", (feature,))
    try:
        for protocol in ("v1", "v2"):
            with pytest.raises(ServingRequestError) as err:
                client.predict(rows, protocol)
            assert err.value.status == 500 and "feature lookup failed: DecodeError" in err.value.message
        with pytest.raises(ServingRequestError) as err:
            client.predict(rows, "grpc")
        assert err.value.status == "INTERNAL"
        time.sleep(1.5)  # a few store probes
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert f'kfloop_online_store_up{{model="{name}"}} 1.0' in httpx.get(f"{server.url}/metrics").text
        assert "Traceback" in server.log_path.read_text() and "DecodeError" in server.log_path.read_text()
    finally:
        with sqlite3.connect(db) as conn:
            conn.executemany(f"update {table} set value = ? where rowid = ?", [(v, r) for r, v in saved])
    assert not any(p["defaulted"] for p in client.predict(rows, "v1")["predictions"])
