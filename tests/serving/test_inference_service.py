"""The InferenceService manifest: valid against the KServe SDK's models, and every field from the config.

No Kubernetes API server (nor the KServe CRD) can run here, so ``kubectl --dry-run`` cannot check the
object; instead the manifest is read back into the SDK's own model classes, rejecting any key their
schema does not have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes.client.models as k8s_models
import pytest
import yaml
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import Config, config_from_json, load_config, parse_config
from kfloop.errors import ConfigError
from kfloop.registry import ModelRegistry
from kfloop.serving.inference_service import (
    SPEC_HASH_ANNOTATION,
    build_inference_service,
    inference_service_manifest,
    render_yaml,
    spec_hash,
    storage_uri_for,
)
from kfloop.storage import LocalStorage, S3Storage
from tests.conftest import REPO, demo_config

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": "AKIA-must-not-leak",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-must-not-leak",
    "REDIS_CONNECTION_STRING": "redis:6379,password=hunter2-must-not-leak",
}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
runner = CliRunner()


def cluster_config(**serving: Any) -> Config:
    """The shipped cluster config with ``serving`` keys overridden (validated like a file)."""
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["serving"].update(serving)
    if data["serving"]["canary_traffic_percent"] is not None:
        data["serving"]["deployment_mode"] = "knative"  # KServe rolls canaries out with Knative revisions
    return parse_config(data, "test config")


def from_manifest(data: Any, type_name: str) -> Any:
    """Build SDK objects from a manifest dict like ``kserve.ApiClient`` does (which cannot resolve the
    Kubernetes core types itself), failing on any key or value type the schema does not allow."""
    import kserve.models as kserve_models  # tests/conftest.py imports kserve first, with a neutral argv

    if type_name.startswith("list["):
        assert isinstance(data, list), type_name
        return [from_manifest(x, type_name[5:-1]) for x in data]
    if match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        assert isinstance(data, dict), type_name
        return {k: from_manifest(v, match.group(2)) for k, v in data.items()}
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(data, bool))
        return data
    cls = getattr(kserve_models, type_name, None) or getattr(k8s_models, type_name)
    attrs = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = set(data) - set(attrs)
    assert not unknown, f"{type_name} has no field(s) {sorted(unknown)}"
    return cls(**{attrs[k]: from_manifest(v, cls.openapi_types[attrs[k]]) for k, v in data.items()})


def build(config: Config, version: str = "v7", *, canary: bool = False) -> dict:
    uri = f"s3://kfloop/fraud-demo/registry/fraud-detector/{version}/"  # storage_uri_for: tested on S3 below
    isvc = build_inference_service(config, version, uri, canary=canary)
    manifest = inference_service_manifest(isvc)
    assert from_manifest(manifest, "V1beta1InferenceService") == isvc  # a lossless round trip
    return manifest


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    refs = {n: e["valueFrom"]["secretKeyRef"] for n, e in env_of(container).items() if "valueFrom" in e}
    return {n: (r["name"], r["key"]) for n, r in refs.items()}


def test_cluster_manifest_is_a_valid_inference_service_for_the_version() -> None:
    cfg = load_config(CLUSTER_CONFIG)
    m = build(cfg, "v7")
    assert (m["apiVersion"], m["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert (m["metadata"]["name"], m["metadata"]["namespace"]) == ("fraud-detector", "kubeflow")
    assert m["metadata"]["labels"]["kfloop.io/model-version"] == "v7"
    assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kfloop"
    predictor, transformer = m["spec"]["predictor"], m["spec"]["transformer"]
    (pc,), (tc,) = predictor["containers"], transformer["containers"]
    assert pc["name"] == tc["name"] == "kserve-container"  # the name KServe's controller acts on
    assert pc["image"] == tc["image"] == cfg.cluster.image
    assert pc["command"] == ["python3", "-m", "kfloop.serving", "predictor"]
    assert pc["args"][:2] == ["--model_dir", "/mnt/models"]
    assert tc["command"] == ["python3", "-m", "kfloop.serving", "transformer"]
    assert tc["args"][:2] == ["--predictor_protocol", "v2"]
    uri = "s3://kfloop/fraud-demo/registry/fraud-detector/v7/"
    assert env_of(pc)["STORAGE_URI"]["value"] == uri and "STORAGE_URI" not in env_of(tc)
    assert env_of(pc)["PROTOCOL"]["value"] == "v2"
    assert predictor["labels"] == {"kfloop.io/model-version": "v7", "app.kubernetes.io/part-of": "fraud-demo"}
    for spec in (predictor, transformer):
        scaling = cfg.serving.autoscaling
        assert (spec["minReplicas"], spec["maxReplicas"]) == (scaling.min_replicas, scaling.max_replicas)
        assert (spec["scaleMetric"], spec["scaleTarget"]) == (scaling.scale_metric, scaling.scale_target)
        assert "canaryTrafficPercent" not in spec and "logger" not in spec
        assert spec["serviceAccountName"] == cfg.cluster.service_account == "fraud-demo-serving"  # the chart's
    assert pc["resources"] == {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}
    assert tc["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "512Mi"}}
    assert pc["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    assert tc["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    for c in (pc, tc):
        assert config_from_json(env_of(c)["KFLOOP_CONFIG_JSON"]["value"]) == cfg


def test_secrets_are_references_and_no_value_reaches_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(CLUSTER_CONFIG)
    m = build(cfg)
    (pc,), (tc,) = m["spec"]["predictor"]["containers"], m["spec"]["transformer"]["containers"]
    s3 = {"AWS_ACCESS_KEY_ID": ("kfloop-s3", "accesskey"), "AWS_SECRET_ACCESS_KEY": ("kfloop-s3", "secretkey")}
    assert secret_refs(tc) == s3 | {"REDIS_CONNECTION_STRING": ("kfloop-redis", "connection-string")}
    assert secret_refs(pc) == s3  # the predictor never opens the online store
    assert env_of(tc)["FEAST_S3_ENDPOINT_URL"]["value"] == "http://minio-service.kubeflow:9000"
    assert "FEAST_S3_ENDPOINT_URL" not in env_of(pc)
    for name in SECRET_VALUES:
        assert "value" not in env_of(tc)[name], name
    text = render_yaml(build_inference_service(cfg, "v7", "s3://kfloop/x/"))
    for value in SECRET_VALUES.values():
        assert value not in text


def test_autoscaling_resources_and_service_account_come_from_the_config() -> None:
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["cluster"]["service_account"] = "kfloop-serving"
    data["serving"] |= {
        "deployment_mode": "knative",  # scale to zero and rps need Knative's autoscaler
        "autoscaling": {"min_replicas": 0, "max_replicas": 7, "scale_metric": "rps", "scale_target": 250},
        "predictor_resources": {"cpu_request": "2", "cpu_limit": "4", "memory_request": "3Gi", "memory_limit": "6Gi"},
        "http_port": 9000,
        "grpc_port": 9001,
    }
    m = build(parse_config(data, "test config"))
    predictor, transformer = m["spec"]["predictor"], m["spec"]["transformer"]
    for spec in (predictor, transformer):
        assert (spec["minReplicas"], spec["maxReplicas"]) == (0, 7)
        assert (spec["scaleMetric"], spec["scaleTarget"]) == ("rps", 250)
        assert spec["serviceAccountName"] == "kfloop-serving"  # its Secret gives the storage initializer S3 keys
    (pc,), (tc,) = predictor["containers"], transformer["containers"]
    assert pc["resources"] == {"limits": {"cpu": "4", "memory": "6Gi"}, "requests": {"cpu": "2", "memory": "3Gi"}}
    assert pc["args"][2:] == tc["args"][2:] == ["--http_port", "9000", "--grpc_port", "9001"]
    assert pc["ports"][0]["containerPort"] == tc["ports"][0]["containerPort"] == 9000


@pytest.mark.parametrize(("configured", "canary", "expected"), [(20, True, 20), (20, False, None), (None, True, None)])
def test_canary_percent_only_when_asked_and_configured(
    configured: int | None, canary: bool, expected: int | None
) -> None:
    m = build(cluster_config(canary_traffic_percent=configured), canary=canary)
    assert m["spec"]["predictor"].get("canaryTrafficPercent") == expected
    assert "canaryTrafficPercent" not in m["spec"]["transformer"]  # the transformer does not change per version


def test_spec_hash_covers_what_is_served_and_not_the_canary_share_or_runtime_fields() -> None:
    m = build(cluster_config(canary_traffic_percent=20))
    digest = m["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert digest == spec_hash(m) and len(digest) == 64  # the hash leaves itself out
    assert build(cluster_config(canary_traffic_percent=20))["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == digest
    as_canary = build(cluster_config(canary_traffic_percent=20), canary=True)
    assert as_canary["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert as_canary["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == digest  # how it rolls out, not what
    live = json.loads(json.dumps(m))  # as the API server returns it
    live["metadata"] |= {"resourceVersion": "42", "uid": "0b7c", "generation": 3, "creationTimestamp": "2026-01-01"}
    live["status"] = {"url": "http://fraud-detector.kubeflow.example.com"}
    assert spec_hash(live) == digest
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["cluster"]["image"] = "ghcr.io/kfloop/kfloop:0.1.1"
    others = [
        build(parse_config(data, "test config")),
        build(cluster_config(canary_traffic_percent=20), "v8"),
        build(cluster_config(canary_traffic_percent=20, autoscaling={"max_replicas": 9})),
        build(cluster_config(canary_traffic_percent=20, max_batch_rows=500)),
    ]
    hashes = {o["metadata"]["annotations"][SPEC_HASH_ANNOTATION] for o in others}
    assert len(hashes) == len(others) and digest not in hashes


def test_logger_only_with_a_sink_url() -> None:
    sink = "http://message-dumper.kubeflow.svc.cluster.local"
    m = build(cluster_config(inference_log={"sink_url": sink}))
    # on the transformer: the client's request (entity keys) and the answer (version, defaulted)
    assert m["spec"]["transformer"]["logger"] == {"mode": "all", "url": sink}
    assert "logger" not in m["spec"]["predictor"]
    assert "logger" not in build(cluster_config())["spec"]["transformer"]


def test_the_transformers_grace_period_covers_the_inference_logs_last_flush() -> None:
    """Knative makes the revision timeout the pod's grace period (300 s by default), raw mode Kubernetes' 30 s:
    a longer shutdown bound for the log's last flush was cut short by SIGKILL. Now the transformer's timeout
    (Knative) or terminationGracePeriodSeconds (raw) covers it, and a bound beyond Knative's maximum is refused
    when the config is read."""
    knative = {"deployment_mode": "knative"}
    assert "timeout" not in build(cluster_config(**knative))["spec"]["transformer"]  # default 20 s: unchanged
    long = {"shutdown_timeout_seconds": 400.5}
    assert build(cluster_config(**knative, inference_log=long))["spec"]["transformer"]["timeout"] == 461
    sink = {**long, "sink_url": "http://sink.kubeflow.svc.cluster.local"}  # the sink writes the log
    assert "timeout" not in build(cluster_config(**knative, inference_log=sink))["spec"]["transformer"]
    raw = build(cluster_config())["spec"]["transformer"]  # the default mode: 20 s + the 60 s margin > 30 s
    assert "timeout" not in raw and raw["terminationGracePeriodSeconds"] == 80
    raw_long = build(cluster_config(inference_log=long))["spec"]["transformer"]
    assert raw_long["terminationGracePeriodSeconds"] == 461
    assert "terminationGracePeriodSeconds" not in build(cluster_config(inference_log=sink))["spec"]["transformer"]
    with pytest.raises(ConfigError, match="shutdown_timeout_seconds"):
        cluster_config(inference_log={"shutdown_timeout_seconds": 600})


@pytest.mark.parametrize(
    ("protocol", "port", "kserve_protocol"),
    [("v1", {"name": "http1", "containerPort": 8080}, "v1"), ("grpc-v2", {"name": "h2c", "containerPort": 8081}, "v2")],
)
def test_predictor_declares_the_port_of_its_protocol(protocol: str, port: dict, kserve_protocol: str) -> None:
    m = build(cluster_config(predictor_protocol=protocol))
    (pc,), (tc,) = m["spec"]["predictor"]["containers"], m["spec"]["transformer"]["containers"]
    assert pc["ports"] == [{**port, "protocol": "TCP"}]
    assert env_of(pc)["PROTOCOL"]["value"] == kserve_protocol
    assert tc["args"][:2] == ["--predictor_protocol", protocol]
    assert tc["ports"][0]["name"] == "http1"


@pytest.mark.s3
def test_storage_uri_is_the_version_folder_on_s3(s3_storage: S3Storage) -> None:
    uri = storage_uri_for(s3_storage, load_config(CLUSTER_CONFIG), "v7")
    # exactly this version's folder, with the slash that keeps v70/ out of a download of v7
    assert uri == f"s3://{s3_storage.bucket}/ws/registry/fraud-detector/v7/"


def test_local_workspace_gives_a_file_uri_and_no_secrets(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "ws")
    uri = storage_uri_for(LocalStorage(tmp_path / "ws"), cfg, "v2")
    assert uri == (tmp_path / "ws" / "registry" / "fraud-detector" / "v2").resolve().as_uri() + "/"
    m = inference_service_manifest(build_inference_service(cfg, "v2", uri))
    for spec in (m["spec"]["predictor"], m["spec"]["transformer"]):
        assert not secret_refs(spec["containers"][0])


def test_render_yaml_is_the_manifest_with_a_generated_header() -> None:
    isvc = build_inference_service(
        load_config(CLUSTER_CONFIG), "v3", "s3://kfloop/fraud-demo/registry/fraud-detector/v3/"
    )
    text = render_yaml(isvc)
    assert text.startswith("# GENERATED by kfloop for model version v3")
    assert yaml.safe_load(text) == json.loads(json.dumps(inference_service_manifest(isvc)))


# --- the CLI ----------------------------------------------------------------------------------------------


def _workspace_with_versions(tmp_path: Path, n: int, champion: str | None) -> Path:
    """A local workspace whose registry has ``n`` versions, and a config file pointing at it."""
    cfg = demo_config(tmp_path / "ws")
    registry = ModelRegistry(LocalStorage(tmp_path / "ws"), cfg.training.model_name)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"weights")
    for _ in range(n):
        registry.register(model_dir, {"threshold": 0.5})
    if champion:
        registry.promote(champion, "test")
    path = tmp_path / "kfloop.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def test_cli_prints_the_champion_or_writes_a_version(tmp_path: Path) -> None:
    config = _workspace_with_versions(tmp_path, 2, champion="v1")
    out = runner.invoke(app, ["inference-service", "--config", str(config)])
    assert out.exit_code == 0, out.output
    m = yaml.safe_load(out.stdout)
    assert m["metadata"]["labels"]["kfloop.io/model-version"] == "v1"
    assert env_of(m["spec"]["predictor"]["containers"][0])["STORAGE_URI"]["value"].endswith("/fraud-detector/v1/")
    dest = tmp_path / "out" / "isvc.yaml"
    written = runner.invoke(app, ["inference-service", "-c", str(config), "--version", "v2", "--output", str(dest)])
    assert written.exit_code == 0, written.output
    assert yaml.safe_load(dest.read_text())["metadata"]["labels"]["kfloop.io/model-version"] == "v2"
    assert not [p.name for p in dest.parent.iterdir() if p.name != "isvc.yaml"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "champion", "code", "message"),
    [
        ([], None, 1, "has no champion yet"),
        (["--version", "v9"], "v1", 1, "has no version 'v9'"),
        (["--canary"], "v1", 2, "--canary needs serving.canary_traffic_percent"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, args: list[str], champion: str | None, code: int, message: str
) -> None:
    config = _workspace_with_versions(tmp_path, 1, champion=champion)
    result = runner.invoke(app, ["inference-service", "--config", str(config), *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not result.stdout
