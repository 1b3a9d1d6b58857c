"""Verification without a cluster: every object the Helm chart renders, for each ci values file and a Knative
variant, against Kubernetes' strict schemas, the vendored KServe and Argo CRD schemas, the kserve SDK and Hera
models, the restricted Pod Security Standard field by field, kfloop's own hardening bar, and checkov."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kfloop.config import Config, load_config
from kfloop.kube.chart import CHART_DIR, render_objects
from tests.deploy import checks
from tests.deploy.checks import CHECKOV_SKIPS

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
VARIANTS = {
    **{p.stem: {"values_files": [p]} for p in sorted((CHART_DIR / "ci").glob("*.yaml"))},
    "knative-everything": {"set_values": KNATIVE},
}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "examples" / "fraud" / "kfloop.cluster.yaml")


@pytest.fixture(scope="module")
def rendered(config: Config) -> dict[str, list[dict[str, Any]]]:
    """Each variant's objects, the helm test pod included."""
    return {name: render_objects(config, hooks=True, **kwargs) for name, kwargs in VARIANTS.items()}


def test_variants_render_what_they_switch_on(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {name: {o["kind"] for o in objects} for name, objects in rendered.items()}
    assert {"InferenceService", "CronWorkflow", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role"} <= (
        kinds["default-values"]
    )
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds["production-values"]
    assert "ServiceMonitor" not in kinds["default-values"]


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
    objects = rendered["production-values"] + [
        o for o in rendered["knative-everything"] if o["kind"] in ("InferenceService", "Deployment")
    ]
    passed, failed = checks.checkov_scan(objects, CHECKOV_SKIPS)
    assert failed == [], "\n".join(str(f) for f in failed)
    assert passed >= 400, f"only {passed} checks passed: did checkov scan the chart at all?"
