"""Verification without a cluster: every object the Helm chart renders, for each ci values file, a Knative
variant and two stream worker variants (Redis, Kafka), against Kubernetes' strict schemas, the vendored KServe and
Argo CRD schemas, the kserve SDK and Hera models, the restricted Pod Security Standard field by field, kfloop's own
hardening bar, and checkov."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kfloop.config import Config, load_config
from kfloop.kube.chart import CHART_DIR, render_objects
from kfloop.pipelines.schedules import CONFIG_PATH
from tests.deploy import checks
from tests.deploy.checks import CHECKOV_SKIPS
from tests.deploy.conftest import KAFKA_STREAM

ROOT = Path(__file__).resolve().parents[2]
#: prometheus-operator's kinds: no CRD of theirs is vendored (their rules are checked by promtool elsewhere)
UNCHECKED = ("ServiceMonitor", "PrometheusRule")
#: values that switch on everything optional, in Knative mode with a gRPC predictor
KNATIVE = [
    "config.serving.deployment_mode=knative",
    "config.serving.canary_traffic_percent=10",
    "inferenceService.canary=true",
    "config.cluster.image_pull_secrets[0]=regcred",
    "config.serving.predictor_protocol=grpc-v2",
    "config.serving.autoscaling.scale_metric=concurrency",
    "config.serving.autoscaling.scale_target=20",
    "config.serving.autoscaling.min_replicas=0",
    "config.serving.inference_log.shutdown_timeout_seconds=400",
    "inferenceService.modelVersion=v3",
    "feastServer.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
]
#: the stream worker's pods: component label
STREAM_WORKER = {"app.kubernetes.io/component": "stream-worker"}
VARIANTS = {
    **{p.stem: {"values_files": [p]} for p in sorted((CHART_DIR / "ci").glob("*.yaml"))},
    "knative-everything": {"set_values": KNATIVE},
    # the demo with a `stream` section of defaults (Redis Streams, one replica)
    "stream-redis": {"set_values": ["inferenceService.modelVersion=v1", "config.stream.replicas=1"]},
    # the demo streaming from Kafka (conftest.KAFKA_STREAM), production values (ServiceMonitors)
    "stream-kafka": {"values_files": [CHART_DIR / "ci" / "production-values.yaml"], "stream_config": True},
}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "examples" / "fraud" / "kfloop.cluster.yaml")


@pytest.fixture(scope="module")
def rendered(config: Config, stream_config: Config) -> dict[str, list[dict[str, Any]]]:
    """Each variant's objects, the helm test pod included."""
    out = {}
    for name, variant in VARIANTS.items():
        kwargs = dict(variant)
        variant_config = stream_config if kwargs.pop("stream_config", False) else config
        out[name] = render_objects(variant_config, hooks=True, **kwargs)
    return out


def _stream_objects(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The stream worker's objects by kind: those labelled as its component, and those selecting its pods."""
    found = {}
    for obj in objects:
        spec = obj.get("spec") or {}
        selector = spec.get("selector") or {}
        selects = selector.get("matchLabels", selector) or (spec.get("podSelector") or {}).get("matchLabels") or {}
        labels = obj["metadata"].get("labels") or {}
        if STREAM_WORKER.items() <= labels.items() or STREAM_WORKER.items() <= selects.items():
            assert obj["kind"] not in found, f"two stream worker {obj['kind']}s"
            found[obj["kind"]] = obj
    return found


def test_variants_render_what_they_switch_on(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {name: {o["kind"] for o in objects} for name, objects in rendered.items()}
    assert {"InferenceService", "CronWorkflow", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role"} <= (
        kinds["default-values"]
    )
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds["production-values"]
    assert "ServiceMonitor" not in kinds["default-values"]
    for name, objects in rendered.items():  # the worker comes with a stream section, and only with one
        want = {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"} if "stream" in name else set()
        if name == "stream-kafka":
            want.add("ServiceMonitor")
        assert set(_stream_objects(objects)) == want, name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_is_valid_against_its_schema(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    for version in ("1.33", checks.kube_versions()[-1]):  # the version kfloop targets, and the newest known
        checked = checks.validate_core(rendered[variant], version, unchecked_kinds=UNCHECKED)
        crd = [k for k, how in checked.items() if how.startswith("CRD schema")]
        assert {k.split("/")[0] for k in crd} == {"InferenceService", "CronWorkflow"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_custom_resources_read_back_through_the_sdk_models(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    custom = [o for o in rendered[variant] if o["kind"] in ("InferenceService", "CronWorkflow")]
    assert custom
    for obj in custom:
        checks.validate_models(obj)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_is_restricted_and_hardened(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    pods = 0
    for obj in rendered[variant]:
        checks.assert_pss_restricted(obj)
        checks.assert_hardened(obj)
        pods += len(checks.pod_views(obj))
    assert pods >= 5  # redis, the test pod, two serving components, two scheduled steps at least


def test_checkov_finds_nothing_but_the_documented_skips(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = (
        rendered["production-values"]
        + [o for o in rendered["knative-everything"] if o["kind"] in ("InferenceService", "Deployment")]
        + list(_stream_objects(rendered["stream-kafka"]).values())
    )
    passed, failed = checks.checkov_scan(objects, CHECKOV_SKIPS)
    assert failed == [], "\n".join(str(f) for f in failed)
    assert passed >= 400, f"only {passed} checks passed: did checkov scan the chart at all?"


def test_the_stream_worker_runs_the_configs_stream_as_every_other_kfloop_pod_runs(
    rendered: dict[str, list[dict[str, Any]]], stream_config: Config
) -> None:
    """Its Deployment: config.stream.replicas workers running `kfloop stream run` on the ConfigMap the scheduled
    jobs mount, with the stream's Secrets, probed and scraped on the metrics port; its PDB, Service, ServiceMonitor
    and NetworkPolicy select exactly its pods."""
    kafka = _stream_objects(rendered["stream-kafka"])
    deployment, service, policy, budget = (
        kafka[k] for k in ("Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget")
    )
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert deployment["spec"]["replicas"] == KAFKA_STREAM["replicas"] == stream_config.stream.replicas
    assert container["command"] == ["kfloop", "stream", "run", "-c", CONFIG_PATH, "--metrics-port", str(port)]
    assert container["image"] == stream_config.cluster.image
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 120  # the last batch's archive to the lake
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    # the config: the ConfigMap (and key) the CronWorkflows mount, at the path the command names
    (mount,) = [m for m in container["volumeMounts"] if CONFIG_PATH.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    cron = next(o for o in rendered["stream-kafka"] if o["kind"] == "CronWorkflow")
    cron_volumes = [v for v in cron["spec"]["workflowSpec"]["volumes"] if "configMap" in v]
    assert [volume["configMap"]] == [v["configMap"] for v in cron_volumes]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    kafka_secret = KAFKA_STREAM["kafka"]["secrets"][0]
    assert env["KAFKA_PW"] == {"name": kafka_secret["secret_name"], "key": kafka_secret["secret_key"]}
    redis_url = stream_config.stream.redis.secret
    assert env[redis_url.env] == {"name": redis_url.secret_name, "key": redis_url.secret_key}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "REDIS_CONNECTION_STRING"} <= set(env)
    # everything selecting the worker selects its pods, and only them
    pod_labels = pod["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        policy["spec"]["podSelector"]["matchLabels"],
        budget["spec"]["selector"]["matchLabels"],
    ):
        assert STREAM_WORKER.items() <= selector.items() <= pod_labels.items()
    assert budget["spec"] == {"minAvailable": 1, "selector": budget["spec"]["selector"]}  # 3 replicas: keep one
    (service_port,) = service["spec"]["ports"]
    assert (service_port["name"], service_port["targetPort"], service_port["port"]) == ("metrics", "metrics", port)
    monitor = kafka["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [port]  # Prometheus
    assert {9092, 9093, 6379} <= {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}  # Kafka, Redis

    redis = _stream_objects(rendered["stream-redis"])
    assert redis["Deployment"]["spec"]["replicas"] == 1
    assert redis["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1  # one replica: a drain may move it
    (container,) = redis["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "KAFKA_PW" not in {e["name"] for e in container["env"]}


def test_the_stream_worker_can_be_switched_off(stream_config: Config) -> None:
    assert _stream_objects(render_objects(stream_config, set_values=["streamWorker.enabled=false"])) == {}


def test_request_metrics_are_scraped_from_the_transformer_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The predictor behind the transformer counts every request again under the model's name: the serving
    ServiceMonitor drops its request series, so alerts, SLOs and the dashboard count each request once."""
    import re

    from kfloop.monitoring import metric_names as names

    (monitor,) = [
        o for o in rendered["production-values"] if o["kind"] == "ServiceMonitor" and not _stream_objects([o])
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    (copy,) = endpoint["relabelings"]
    assert copy["sourceLabels"] == ["__meta_kubernetes_service_label_component"]
    (drop,) = endpoint["metricRelabelings"]
    assert drop["action"] == "drop" and drop["sourceLabels"] == [copy["targetLabel"], "__name__"]
    dropped = re.compile(f"^(?:{drop['regex']})$")  # Prometheus anchors relabel regexes
    series = [names.REQUESTS_TOTAL, *(f"{names.REQUEST_SECONDS}_{s}" for s in ("bucket", "sum", "count"))]
    assert all(dropped.match(f"predictor;{s}") for s in series)
    assert not any(dropped.match(f"transformer;{s}") for s in series)
    assert not dropped.match(f"predictor;{names.MODEL_VERSION_INFO}")  # the predictor's other metrics stay
