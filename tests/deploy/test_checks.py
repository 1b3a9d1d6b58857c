"""The checks of tests/deploy/checks.py pass the objects kfloop renders today (the CronWorkflows of
pipelines/compiled/schedules, the InferenceService the deploy step applies, a hardened Deployment) and fail
crafted bad variants of them, each failure naming the object, the container and the field."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kfloop.config import load_config
from kfloop.serving.inference_service import build_inference_service, inference_service_manifest
from tests.conftest import REPO
from tests.deploy import checks
from tests.deploy.checks import CHECKOV_SKIPS, CheckError

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
SCHEDULES = REPO / "pipelines" / "compiled" / "schedules"
#: checkov checks that say what assert_pss_restricted / assert_hardened say: the objects that pass those pass these.
CHECKOV_MIRRORS = {
    "CKV_K8S_10",  # cpu requests
    "CKV_K8S_11",  # cpu limits
    "CKV_K8S_12",  # memory requests
    "CKV_K8S_13",  # memory limits
    "CKV_K8S_14",  # image tag not latest or blank
    "CKV_K8S_16",  # privileged
    "CKV_K8S_17",  # hostPID
    "CKV_K8S_18",  # hostIPC
    "CKV_K8S_19",  # hostNetwork
    "CKV_K8S_20",  # allowPrivilegeEscalation
    "CKV_K8S_22",  # readOnlyRootFilesystem
    "CKV_K8S_23",  # root containers
    "CKV_K8S_28",  # NET_RAW
    "CKV_K8S_31",  # seccomp
    "CKV_K8S_37",  # capabilities
}

HARDENED_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: feature-server, namespace: kubeflow, labels: {app.kubernetes.io/name: kfloop}}
spec:
  replicas: 2
  selector: {matchLabels: {app: feature-server}}
  template:
    metadata: {labels: {app: feature-server}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      volumes: [{name: tmp, emptyDir: {sizeLimit: 1Gi}}]
      containers:
      - name: server
        image: ghcr.io/kfloop/kfloop:0.1.0
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /ready, port: http}}
        livenessProbe: {httpGet: {path: /live, port: 8080}}
        resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 500m, memory: 256Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
"""


@pytest.fixture(scope="module")
def schedules() -> list[dict[str, Any]]:
    objects = checks.load_objects(SCHEDULES)
    assert {o["kind"] for o in objects} == {"CronWorkflow"} and len(objects) >= 2
    return objects


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    cfg = load_config(CLUSTER_CONFIG)
    uri = "s3://kfloop/fraud-demo/registry/fraud-detector/v1/"
    return inference_service_manifest(build_inference_service(cfg, "v1", uri))


@pytest.fixture
def deployment() -> dict[str, Any]:
    return yaml.safe_load(HARDENED_DEPLOYMENT)


def failures(check: Callable[..., object], *args: Any) -> list[str]:
    """The check's findings as strings; [] when it passes."""
    try:
        check(*args)
    except CheckError as exc:
        assert exc.findings, exc
        return [str(f) for f in exc.findings]
    return []


def one(found: list[str], *parts: str) -> str:
    """The single finding that mentions every part (the object, the container, the field)."""
    hits = [f for f in found if all(p in f for p in parts)]
    assert len(hits) == 1, f"expected one finding with {parts}, got:\n" + "\n".join(found)
    return hits[0]


def template(cwf: dict[str, Any]) -> dict[str, Any]:
    return cwf["spec"]["workflowSpec"]["templates"][0]


# ------------------------------------------------------------------------------------------------------ schemas


def test_default_kube_version_is_shipped_and_an_unknown_one_is_refused(deployment: dict) -> None:
    assert checks.DEFAULT_KUBE_VERSION in checks.kube_versions()
    with pytest.raises(ValueError, match=r"no schemas for Kubernetes 1\.99"):
        checks.validate_core([deployment], "1.99")


@pytest.mark.parametrize("version", [checks.DEFAULT_KUBE_VERSION, checks.kube_versions()[-1]])
def test_core_validates_builtin_kinds_and_sends_custom_resources_to_their_crd(
    version: str, schedules: list, isvc: dict, deployment: dict
) -> None:
    checked = checks.validate_core([*schedules, isvc, deployment], version)
    assert checked["Deployment/feature-server"] == f"Kubernetes {version} (strict)"
    assert checked["InferenceService/fraud-detector"].startswith("CRD schema serving.kserve.io_inferenceservices")
    assert all(checked[f"CronWorkflow/{o['metadata']['name']}"].startswith("CRD schema argoproj") for o in schedules)


def test_core_names_an_unknown_field_a_wrong_type_a_duplicate_and_a_bad_label(deployment: dict) -> None:
    deployment["spec"]["replicas"] = "two"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = "Always"
    container["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    deployment["metadata"]["labels"]["bad"] = "not a label value!"
    found = failures(checks.validate_core, [deployment])
    one(found, "Deployment/feature-server", "spec.replicas", "'two' is not of type 'integer'")
    one(found, "spec.template.spec.containers[0].imagePullPolicyy", "unknown field")
    one(found, "spec.template.spec.containers[0].env[1]", "duplicate of item [0] (name=A)")
    one(found, "metadata.labels.bad", "is not a label value")
    assert len(found) == 4, found


def test_core_refuses_a_kind_nothing_here_can_check_unless_told(deployment: dict) -> None:
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}}
    one(failures(checks.validate_core, [monitor]), "ServiceMonitor/m", "no schema for monitoring.coreos.com/v1")
    checked = checks.validate_core([monitor, deployment], unchecked_kinds={"ServiceMonitor"})
    assert checked["ServiceMonitor/m"] == "not checked (unchecked_kinds)"


def test_crd_passes_the_rendered_custom_resources(schedules: list, isvc: dict) -> None:
    for obj in [*schedules, isvc]:
        checks.validate_crd(obj)


def test_crd_fails_an_unknown_field_in_the_inference_service(isvc: dict) -> None:
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["replicaCount"] = 2
    bad["spec"]["transformer"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    bad["status"] = {"anything": {"goes": 1}}  # x-kubernetes-preserve-unknown-fields
    found = failures(checks.validate_crd, bad)
    one(found, "InferenceService/fraud-detector", "spec.predictor.replicaCount", "unknown field")
    one(found, "spec.transformer.containers[0].securityContext.readOnlyRootFilesytem", "unknown field")
    assert len(found) == 2, found


def test_crd_fails_a_bad_field_type_and_a_bad_quantity_in_a_cron_workflow(schedules: list) -> None:
    bad = copy.deepcopy(schedules[0])
    name = bad["metadata"]["name"]
    bad["spec"]["startingDeadlineSeconds"] = "five minutes"
    bad["spec"]["failedJobsHistoryLimit"] = 2**40  # int32
    template(bad)["container"]["resources"]["limits"]["memory"] = "4 GB"
    template(bad)["container"]["ports"] = [{"containerPort": "http"}]
    found = failures(checks.validate_crd, bad)
    one(found, f"CronWorkflow/{name}", "spec.startingDeadlineSeconds", "'five minutes' is not of type 'integer'")
    one(found, "spec.failedJobsHistoryLimit", "is not a 'int32'")
    one(found, "templates[0].container.resources.limits.memory", "does not match")
    one(found, "templates[0].container.ports[0].containerPort", "is not of type 'integer'")
    assert len(found) == 4, found


def test_crd_allows_unknown_fields_only_where_the_schema_preserves_them(schedules: list) -> None:
    cwf = copy.deepcopy(schedules[0])
    cwf["spec"]["workflowSpec"]["templates"].append({"name": "notify", "plugin": {"slack": {"text": "hi"}}})
    checks.validate_crd(cwf)
    cwf["spec"]["workflowSpec"]["templates"][-1]["plugn"] = {}
    one(failures(checks.validate_crd, cwf), "spec.workflowSpec.templates[1].plugn", "unknown field")


def test_crd_checks_metadata_as_object_meta(isvc: dict) -> None:
    bad = copy.deepcopy(isvc)
    bad["metadata"]["name"] = "Fraud_Detector"
    bad["metadata"]["ownerRefs"] = []
    found = failures(checks.validate_crd, bad)
    one(found, "metadata.name", "not a DNS-1123 subdomain")
    one(found, "metadata.ownerRefs", "unknown field")


# --------------------------------------------------------------------------------------------------- SDK models


def test_models_take_the_rendered_custom_resources_losslessly(schedules: list, isvc: dict) -> None:
    for obj in [*schedules, isvc]:
        checks.validate_models(obj)


def test_models_catch_what_the_kserve_sdk_would_drop_or_coerce(isvc: dict) -> None:
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["replicaCount"] = 2
    bad["spec"]["predictor"]["minReplicas"] = "1"
    bad["spec"]["transformer"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    found = failures(checks.validate_models, bad)
    one(found, "spec.predictor.replicaCount", "unknown field (V1beta1PredictorSpec has none")
    one(found, "spec.predictor.minReplicas", "expected int, got str '1'")
    one(found, "spec.transformer.containers[0].resources.limit", "V1ResourceRequirements has none")


def test_models_catch_a_bad_type_and_what_heras_models_drop(schedules: list) -> None:
    bad = copy.deepcopy(schedules[0])
    bad["spec"]["startingDeadlineSeconds"] = "soon"
    one(failures(checks.validate_models, bad), "spec.startingDeadlineSeconds", "valid integer")
    bad = copy.deepcopy(schedules[0])
    bad["spec"]["startingDeadlineSeconds"] = "300"  # lax pydantic coerces it: the round trip shows it
    template(bad)["container"]["securityContext"]["readOnlyRootFilesytem"] = True
    found = failures(checks.validate_models, bad)
    one(found, "spec.startingDeadlineSeconds", "'300' becomes 300")
    one(found, "templates[0].container.securityContext.readOnlyRootFilesytem", "unknown field")


def test_models_refuse_a_kind_they_have_no_model_for(deployment: dict) -> None:
    with pytest.raises(LookupError, match="no SDK model for apps/v1 Deployment"):
        checks.validate_models(deployment)


# ------------------------------------------------------------------------------------------ Pod Security, hardening


def test_pod_views_find_every_pod_template(schedules: list, isvc: dict, deployment: dict) -> None:
    assert [v.label for v in checks.pod_views(isvc)] == ["spec.predictor", "spec.transformer"]
    views = checks.pod_views(schedules[0])
    assert [c.path for v in views for c in v.containers] == ["spec.workflowSpec.templates[0].container"]
    assert views[0].where("securityContext") == "spec.workflowSpec.securityContext"
    assert not views[0].long_running
    (view,) = checks.pod_views(deployment)
    assert view.long_running and view.where("hostNetwork") == "spec.template.spec.hostNetwork"


def test_the_rendered_objects_meet_the_restricted_standard_and_the_hardening_bar(
    schedules: list, isvc: dict, deployment: dict
) -> None:
    for obj in [*schedules, isvc, deployment]:
        checks.assert_pss_restricted(obj)
        checks.assert_hardened(obj)


def test_pss_fails_a_privileged_container_and_names_it(deployment: dict) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] |= {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}
    found = failures(checks.assert_pss_restricted, deployment)
    one(found, "Deployment/feature-server", "container server", "containers[0].securityContext.privileged")
    one(found, "container server", "capabilities.add", "SYS_ADMIN may not be added")
    assert len(found) == 2, found


def test_pss_fails_a_cron_workflow_without_seccomp(schedules: list) -> None:
    bad = copy.deepcopy(schedules[0])
    del bad["spec"]["workflowSpec"]["securityContext"]["seccompProfile"]
    del template(bad)["container"]["securityContext"]["seccompProfile"]
    name, tmpl = bad["metadata"]["name"], template(bad)["name"]
    found = failures(checks.assert_pss_restricted, bad)
    field = "spec.workflowSpec.templates[0].container.securityContext.seccompProfile.type"
    one(found, f"CronWorkflow/{name}", f"(template {tmpl})", field, "must be RuntimeDefault or Localhost")
    assert len(found) == 1, found


def test_pss_fails_host_access_root_and_unchecked_patches(deployment: dict, schedules: list) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pod |= {"hostNetwork": True, "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]}
    pod["securityContext"]["runAsUser"] = 0
    pod["containers"][0]["ports"][0]["hostPort"] = 80
    del pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    found = failures(checks.assert_pss_restricted, deployment)
    one(found, "spec.template.spec.hostNetwork", "host namespaces")
    one(found, "spec.template.spec.volumes[0].hostPath", "volume type hostPath is not allowed")
    one(found, "spec.template.spec.securityContext.runAsUser", "must not be 0")
    one(found, "container server", "containers[0].ports[0].hostPort", "must be unset or 0")
    one(found, "container server", "allowPrivilegeEscalation", "must be false (is None)")
    assert len(found) == 5, found
    cwf = copy.deepcopy(schedules[0])
    template(cwf)["podSpecPatch"] = '{"hostNetwork": true}'
    one(failures(checks.assert_pss_restricted, cwf), "templates[0].podSpecPatch", "not allowed")


def test_hardening_fails_a_container_without_limits(isvc: dict) -> None:
    bad = copy.deepcopy(isvc)
    del bad["spec"]["predictor"]["containers"][0]["resources"]["limits"]
    found = failures(checks.assert_hardened, bad)
    for res in ("cpu", "memory"):
        one(found, "InferenceService/fraud-detector", "container kserve-container (spec.predictor)", f"limits.{res}")
    assert len(found) == 2, found


def test_hardening_fails_latest_and_untagged_images(schedules: list, deployment: dict) -> None:
    bad = copy.deepcopy(schedules[0])
    template(bad)["container"]["image"] = "foo:latest"
    one(failures(checks.assert_hardened, bad), "templates[0].container.image", "image foo:latest uses the tag latest")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "registry:5000/kfloop"
    one(failures(checks.assert_hardened, deployment), "containers[0].image", "has no tag or digest")
    digest = "sha256:" + "a" * 64
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = f"registry:5000/kfloop@{digest}"
    checks.assert_hardened(deployment)


def test_hardening_wants_probes_and_a_read_only_root_only_where_they_belong(deployment: dict) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"], container["livenessProbe"]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    found = failures(checks.assert_hardened, deployment)
    one(found, "container server", "containers[0].readinessProbe", "long-running")
    one(found, "container server", "containers[0].livenessProbe", "long-running")
    one(found, "container server", "readOnlyRootFilesystem", "must be true")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "backfill"},
        "spec": {"template": deployment["spec"]["template"]},
    }
    assert [f for f in failures(checks.assert_hardened, job) if "Probe" in f] == []


# ------------------------------------------------------------------------------------------------------ checkov


@pytest.fixture(scope="module")
def checkov(schedules: list, isvc: dict) -> tuple[int, list[checks.CheckovFailure], float]:
    """One checkov run (a few seconds) on the rendered objects and a bad Deployment."""
    bad = yaml.safe_load(HARDENED_DEPLOYMENT)
    bad["metadata"]["name"] = "bad"
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container |= {"image": "foo:latest", "resources": {}}
    container["securityContext"]["privileged"] = True
    started = time.monotonic()
    passed, failed = checks.checkov_scan([*schedules, isvc, bad], CHECKOV_SKIPS)
    return passed, failed, time.monotonic() - started


def test_checkov_scans_the_cron_workflows_through_the_pods_they_make(checkov: tuple, schedules: list) -> None:
    passed, failed, seconds = checkov
    assert passed > 0, "checkov passed nothing: it scanned nothing"
    print(f"checkov: {passed} passed, {len(failed)} failed in {seconds:.1f}s")
    for cwf in schedules:
        origin = f"CronWorkflow/{cwf['metadata']['name']} template"
        mine = [f for f in failed if (f.derived_from or "").startswith(origin)]
        assert not [f for f in mine if f.check_id in CHECKOV_MIRRORS], mine
    assert not [f for f in failed if f.check_id in CHECKOV_SKIPS]


def test_checkov_fails_the_bad_deployment(checkov: tuple) -> None:
    _, failed, _ = checkov
    ids = {f.check_id for f in failed if f.resource == "Deployment.kubeflow.bad"}
    assert {"CKV_K8S_14", "CKV_K8S_16", "CKV_K8S_11", "CKV_K8S_13"} <= ids, ids


def test_checkov_skips_need_a_reason() -> None:
    with pytest.raises(ValueError, match="justification"):
        checks.checkov_scan([], {"CKV_K8S_15": " "})
