"""The Helm chart helm/kfloop, rendered and linted with the real Helm engine (helm-python-sdk), against the
config it is generated from: its generated files are current, it agrees with kfloop's own builders (the
InferenceService the deploy step applies, the CronWorkflows, the alert rules, the config), its schema refuses
bad values by name, and manifests/ is exactly the chart in kustomize form."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfloop.config import Config, config_from_json, load_config, parse_config
from kfloop.errors import ConfigError
from kfloop.kube.chart import CHART_DIR, lint_chart, objects_of, release_values, render_manifests, render_objects
from kfloop.kube.manifests import OVERLAYS, object_key, render_tree
from kfloop.kube.schema import values_schema_text
from kfloop.kube.values import generated_values_text
from kfloop.monitoring.alert_rules import build_rules
from kfloop.pipelines.schedules import build_schedules
from kfloop.serving.inference_service import (
    SPEC_HASH_ANNOTATION,
    build_inference_service,
    inference_service_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = "examples/fraud/kfloop.cluster.yaml"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*.yaml"))


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / CLUSTER_CONFIG)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# --- generated files ------------------------------------------------------------------------------------------


def test_the_demos_generated_values_are_current(config: Config) -> None:
    found = (ROOT / "examples" / "fraud" / "helm-values.yaml").read_text()
    assert found == generated_values_text(config, CLUSTER_CONFIG), "examples/fraud/helm-values.yaml: run make compile"


def test_plain_helm_renders_the_generated_values_file_as_kfloop_does(config: Config) -> None:
    """What `helm template -f examples/fraud/helm-values.yaml` renders is what `kfloop chart render` renders."""
    values = yaml.safe_load((ROOT / "examples" / "fraud" / "helm-values.yaml").read_text())
    assert objects_of(render_manifests(config, values=values)) == render_objects(config)


def test_without_generated_values_the_chart_says_how_to_make_them(config: Config) -> None:
    with pytest.raises(ConfigError, match="missing property 'generated'"):
        render_manifests(config, values={})


def test_another_config_is_not_mixed_with_the_demos_and_keeps_its_nulls() -> None:
    """Helm deep-merges maps and drops null keys: the config travels as text, so a second project's config
    reaches the ConfigMap and the serving containers exactly."""
    flights = load_config(ROOT / "examples" / "flights" / "kfloop.cluster.yaml")
    data = flights.model_dump(mode="json")
    data["monitoring"]["window"] = {"rows": None, "duration": "1h"}
    flights = parse_config(data, "flights with a null")
    objects = render_objects(flights, set_values=["inferenceService.modelVersion=v1"])
    (config_map,) = [o for o in _by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    assert parse_config(yaml.safe_load(config_map["data"]["kfloop.yaml"]), "configmap") == flights
    (isvc,) = _by_kind(objects, "InferenceService")
    env = {e["name"]: e.get("value") for e in isvc["spec"]["transformer"]["containers"][0]["env"]}
    assert config_from_json(env["KFLOOP_CONFIG_JSON"]) == flights


def test_values_schema_is_current() -> None:
    assert (CHART_DIR / "values.schema.json").read_text() == values_schema_text(), "run make compile"


def test_manifests_are_the_chart_in_kustomize_form_byte_for_byte(config: Config) -> None:
    expected = render_tree(config)
    found = {str(p.relative_to(ROOT / "manifests")): p.read_text() for p in (ROOT / "manifests").rglob("*.yaml")}
    assert sorted(found) == sorted(expected), "manifests/: run make manifests"
    stale = [path for path, text in expected.items() if found[path] != text]
    assert not stale, f"manifests/ stale (run make manifests): {stale}"


# --- lint and render ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: p.name if p else "chart-defaults")
def test_lint_strict_is_clean(config: Config, values_file: Path | None) -> None:
    values = release_values(config, [values_file] if values_file else [])
    assert lint_chart(values) == []


def test_lint_strict_is_clean_with_a_stream_worker(stream_config: Config) -> None:
    assert lint_chart(release_values(stream_config, [CHART_DIR / "ci" / "production-values.yaml"])) == []


def test_release_namespace_must_be_the_configs(config: Config) -> None:
    with pytest.raises(ConfigError, match=r'release namespace "default" is not the config.s cluster.namespace'):
        render_objects(config, namespace="default")


@pytest.mark.parametrize("release", ["Bad_Name", "1kfloop", "my.rel", "x" * 49])
def test_a_release_name_that_cannot_prefix_service_names_is_refused(config: Config, release: str) -> None:
    with pytest.raises(ConfigError, match=r"release name .*DNS-1035"):
        render_objects(config, release=release)


def test_a_namespace_override_moves_the_whole_release(config: Config) -> None:
    objects = render_objects(config, set_values=["config.cluster.namespace=ml-prod"])
    assert {o["metadata"].get("namespace") for o in objects} == {"ml-prod"}
    values = release_values(config, set_values=["config.cluster.namespace=ml-prod"])
    assert lint_chart(values) == []
    found = lint_chart(values, namespace="kubeflow")  # lint mode only logs a template's fail: it counts here
    assert any("release namespace" in f for f in found)


def test_notes_name_every_secret_to_create(config: Config) -> None:
    notes = render_manifests(config)["kfloop/templates/NOTES.txt"]
    assert "create secret generic kfloop-s3 --from-literal=accesskey=... --from-literal=secretkey=..." in notes
    assert (
        "create secret generic kfloop-redis --from-literal=connection-string=... --from-literal=password=..." in notes
    )
    assert "No model is served yet" in notes  # no modelVersion: the pipeline's deploy step creates it
    assert "kfloop-stream" not in notes and "stream worker" not in notes


def test_notes_name_the_stream_workers_secrets(stream_config: Config) -> None:
    notes = render_manifests(stream_config)["kfloop/templates/NOTES.txt"]
    assert "create secret generic kafka-creds --from-literal=password=..." in notes  # stream.kafka.secrets
    assert "create secret generic kfloop-stream --from-literal=redis-url=..." in notes  # its window state
    assert "stream worker (kfloop stream run) runs 3 replica(s) reading kafka" in notes


def test_the_test_pod_is_a_hook_left_out_of_what_is_applied(config: Config) -> None:
    manifests = render_manifests(config)
    names = {o["metadata"]["name"] for o in objects_of(manifests)}
    hooks = [o for o in objects_of(manifests, hooks=True) if o["metadata"]["name"] not in names]
    assert [(o["kind"], o["metadata"]["annotations"]["helm.sh/hook"]) for o in hooks] == [("Pod", "test")]


# --- agreement with kfloop's own builders (one source of truth) -----------------------------------------------


def _comparable_isvc(manifest: dict[str, Any]) -> dict[str, Any]:
    """An InferenceService without what only one side sets: release labels, the spec hash, the config JSON (compared
    parsed, since key order differs)."""
    body = copy.deepcopy(manifest)
    meta = body["metadata"]
    meta["labels"] = {k: v for k, v in meta["labels"].items() if k.startswith("kfloop.io/")}
    meta["annotations"].pop(SPEC_HASH_ANNOTATION, None)
    for component in ("predictor", "transformer"):
        for container in body["spec"][component]["containers"]:
            for env in container["env"]:
                if env["name"] == "KFLOOP_CONFIG_JSON":
                    env["value"] = json.loads(env["value"])
    return body


@pytest.mark.parametrize(
    "serving",
    [
        {},
        {
            "deployment_mode": "knative",
            "predictor_protocol": "grpc-v2",
            "autoscaling": {"min_replicas": 0, "max_replicas": 5, "scale_metric": "concurrency", "scale_target": 20},
            "inference_log": {"shutdown_timeout_seconds": 400},
        },
        {"predictor_protocol": "v1", "inference_log": {"sink_url": "http://sink.kubeflow/"}},
    ],
    ids=["raw-v2", "knative-grpc", "raw-v1-logger"],
)
def test_inference_service_is_the_deploy_steps(config: Config, serving: dict[str, Any]) -> None:
    data = config.model_dump(mode="json")
    for key, value in serving.items():
        data["serving"][key] = value if not isinstance(value, dict) else {**data["serving"][key], **value}
    data["cluster"]["service_account"] = "fraud-demo-serving"
    variant = parse_config(data, "variant")
    chart = _by_kind(render_objects(variant, set_values=["inferenceService.modelVersion=v7"]), "InferenceService")
    assert len(chart) == 1
    uri = "s3://kfloop/fraud-demo/registry/fraud-detector/v7/"
    ours = inference_service_manifest(build_inference_service(variant, "v7", uri))
    assert _comparable_isvc(chart[0]) == _comparable_isvc(ours)
    env = chart[0]["spec"]["transformer"]["containers"][0]["env"]
    assert config_from_json(env[0]["value"]) == variant  # the serving processes read the same config


def test_a_canary_rollout_is_the_deploy_steps_canary(config: Config) -> None:
    data = config.model_dump(mode="json")
    data["serving"] |= {"deployment_mode": "knative", "canary_traffic_percent": 10}  # canaries need Knative
    knative = parse_config(data, "knative canary")
    values = ["inferenceService.modelVersion=v8", "inferenceService.canary=true"]
    (chart,) = _by_kind(render_objects(knative, set_values=values), "InferenceService")
    uri = "s3://kfloop/fraud-demo/registry/fraud-detector/v8/"
    ours = inference_service_manifest(build_inference_service(knative, "v8", uri, canary=True))
    assert chart["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert _comparable_isvc(chart) == _comparable_isvc(ours)


def test_no_model_version_no_inference_service(config: Config) -> None:
    assert _by_kind(render_objects(config), "InferenceService") == []


def test_cron_workflows_are_the_schedulers(config: Config) -> None:
    chart = {o["metadata"]["name"]: o for o in _by_kind(render_objects(config), "CronWorkflow")}
    ours = {}
    for cron in build_schedules(config).values():
        ours[cron.name] = cron.build().model_dump(by_alias=True, exclude_none=True, mode="json")
    assert sorted(chart) == sorted(ours)
    for name, manifest in ours.items():
        got = chart[name]
        assert got["spec"] == manifest["spec"]
        assert got["metadata"]["namespace"] == config.cluster.namespace
        assert manifest["metadata"]["labels"].items() <= got["metadata"]["labels"].items()


def test_config_map_holds_the_config_and_rules_are_the_alert_rules(config: Config) -> None:
    objects = render_objects(config, set_values=["monitoring.prometheusRule.enabled=true"])
    config_map = next(o for o in _by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "fraud-demo-config")
    assert parse_config(yaml.safe_load(config_map["data"]["kfloop.yaml"]), "configmap") == config
    (rule,) = _by_kind(objects, "PrometheusRule")
    assert rule["spec"]["groups"] == build_rules(config)["groups"]


def test_a_config_override_changes_everything_derived_from_it_alike(config: Config) -> None:
    """`--set config.<key>` is applied to the config, validated, and every derived value generated again."""
    image = "registry.example/kfloop:0.2.0"
    objects = render_objects(
        config,
        set_values=[
            "inferenceService.modelVersion=v2",
            f"config.cluster.image={image}",
            "config.serving.deployment_mode=knative",
            "config.schedules.drift_check.cron=0 * * * *",
        ],
    )
    config_map = next(o for o in _by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "fraud-demo-config")
    assert yaml.safe_load(config_map["data"]["kfloop.yaml"])["cluster"]["image"] == image
    (isvc,) = _by_kind(objects, "InferenceService")
    images = {c["image"] for part in ("predictor", "transformer") for c in isvc["spec"][part]["containers"]}
    crons = {o["metadata"]["name"]: o["spec"] for o in _by_kind(objects, "CronWorkflow")}
    images |= {t["container"]["image"] for spec in crons.values() for t in spec["workflowSpec"]["templates"]}
    assert images == {image}
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert crons["fraud-demo-drift-check"]["schedules"] == ["0 * * * *"]


CONFIG_BAD_VALUES = [
    ("config.serving.autoscaling.max_replicas=-1", "serving.autoscaling.max_replicas"),
    ("config.serving.http_port=0", "serving.http_port"),
    ("config.cluster.image=ghcr.io/kfloop/kfloop:latest", "cluster.image"),
    ("config.training.surprise=1", "training.surprise"),
    ("config.serving.autoscaling.scale_metric=concurrency", "needs Knative"),
]


@pytest.mark.parametrize(("value", "named"), CONFIG_BAD_VALUES, ids=[v for v, _ in CONFIG_BAD_VALUES])
def test_a_bad_config_override_is_refused_by_the_config_model(config: Config, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        render_objects(config, set_values=[value])


def test_plain_helm_refuses_a_config_value_it_cannot_derive_from(config: Config) -> None:
    values = yaml.safe_load((ROOT / "examples" / "fraud" / "helm-values.yaml").read_text())
    with pytest.raises(ConfigError, match="additional properties 'config' not allowed"):
        render_manifests(config, values={**values, "config": {"cluster": {"image": "x:1"}}})


# --- the schema refuses bad values, naming them ---------------------------------------------------------------

BAD_VALUES = [
    ("unknownTopLevel=1", "additional properties 'unknownTopLevel' not allowed"),
    ("redis.unknown=1", "additional properties 'unknown' not allowed"),
    ("redis.image.tag=latest", "/redis/image/tag"),
    ("redis.image.digest=sha256:abc", "/redis/image/digest"),
    ("redis.image.repository=Not A Repo", "/redis/image/repository"),
    ("redis.runAsUser=0", "/redis/runAsUser"),
    ("redis.enabled=maybe", "/redis/enabled"),
    ("feastServer.replicas=-1", "/feastServer/replicas"),
    ("feastServer.port=70000", "/feastServer/port"),
    ("inferenceService.modelVersion=latest", "/inferenceService/modelVersion"),
    ("rbac.pipelineRunnerServiceAccount=Bad_Name", "/rbac/pipelineRunnerServiceAccount"),
    ("networkPolicy.egressCIDRs[0]=everywhere", "/networkPolicy/egressCIDRs/0"),
    ("redis.resources.limits.memory=lots", "/redis/resources/limits/memory"),
    ("commonLabels.team=has spaces", "/commonLabels/team"),
    ("generated.configJson=not json", "/generated/configJson"),
    ("networkPolicy.egressCIDRs={}", "/networkPolicy/egressCIDRs"),  # an empty list would allow anywhere
    ("networkPolicy.knativeNamespaces={}", "/networkPolicy/knativeNamespaces"),
    ("fullnameOverride=my.release", "/fullnameOverride"),
    ("streamWorker.metricsPort=80", "/streamWorker/metricsPort"),
    ("streamWorker.terminationGracePeriodSeconds=5", "/streamWorker/terminationGracePeriodSeconds"),
    ("networkPolicy.streamEgressPorts={}", "/networkPolicy/streamEgressPorts"),
]


@pytest.mark.parametrize(("value", "named"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_schema_rejects_a_bad_value_naming_it(config: Config, value: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_objects(config, set_values=[value])
    assert "values don't meet the specifications of the schema" in str(err.value)
    assert named in str(err.value)


# --- manifests/: kustomize yields the chart's objects ---------------------------------------------------------


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kustomize_overlay_equals_helm_render(config: Config, overlay: str) -> None:
    helm = render_objects(config, values_files=[CHART_DIR / "ci" / OVERLAYS[overlay]])
    kustomized = _kustomize(ROOT / "manifests" / "overlays" / overlay)
    assert {object_key(o): o for o in kustomized} == {object_key(o): o for o in helm}


def test_kustomize_base_equals_chart_defaults(config: Config) -> None:
    base = _kustomize(ROOT / "manifests" / "base")
    assert {object_key(o): o for o in base} == {object_key(o): o for o in render_objects(config)}
