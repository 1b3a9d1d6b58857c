"""Server-side apply (kfloop.kube.apply), ``kfloop schedules apply`` and ``kfloop deploy``.

The cluster is :class:`tests.deploy.kube_fake.FakeKubeApi`: a local HTTP server that stands in for the Kubernetes
API server (no cluster can run here). It speaks the API paths the kubernetes client uses for discovery, GET and
server-side apply, and keeps ``resourceVersion`` when an apply changes nothing, as the real server does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.errors import DeployError
from kfloop.kube.apply import APPLY_CONTENT_TYPE, ApplyReport, apply_objects
from kfloop.kube.connect import connect
from tests.conftest import REPO
from tests.deploy.kube_fake import FakeKubeApi

CLUSTER_CONFIG = str(REPO / "examples" / "fraud" / "kfloop.cluster.yaml")
runner = CliRunner()

#: Deliberately out of order: the apply puts the Namespace first and the custom resources last.
OBJECTS = [
    {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "fraud"},
     "spec": {"predictor": {"minReplicas": 1}}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sink"},
     "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "sink", "image": "sink:1"}]}}}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-config"},
     "data": {"kfloop.yaml": "project: fraud\nextends: kfloop.yaml\n"}},
    {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "drift-check"},
     "spec": {"schedules": ["0 * * * *"]}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fraud-workflows"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "fraud-reader"},
     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}},
]  # fmt: skip
APPLY_ORDER = [
    "Namespace/ml",
    "ServiceAccount/fraud-workflows",
    "ConfigMap/fraud-config",
    "ClusterRole/fraud-reader",
    "Deployment/sink",
    "InferenceService/fraud",
    "CronWorkflow/drift-check",
]


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as fake:
        yield fake


def _apply(kube: FakeKubeApi, objects: list[dict] = OBJECTS, **kwargs: bool) -> ApplyReport:
    api = kube.api_client()
    try:
        return apply_objects(copy.deepcopy(objects), namespace="ml", api_client=api, **kwargs)
    finally:
        api.close()


def _kubeconfig(kube: FakeKubeApi, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kube.kubeconfig()))
    return str(path)


def test_the_first_apply_creates_every_object_in_dependency_order(kube: FakeKubeApi) -> None:
    report = _apply(kube)
    assert [r.ref for r in report.results] == APPLY_ORDER
    assert {r.action for r in report.results} == {"created"} and report.changed == len(OBJECTS)
    assert [r.path.rsplit("/", 1)[1] for r in kube.patches] == [ref.split("/")[1] for ref in APPLY_ORDER]
    patch = kube.patches[2]
    assert patch.path == "/api/v1/namespaces/ml/configmaps/fraud-config"
    assert patch.content_type == APPLY_CONTENT_TYPE and patch.query == {"fieldManager": "kfloop", "force": "true"}
    assert kube.patches[3].path == "/apis/rbac.authorization.k8s.io/v1/clusterroles/fraud-reader"  # cluster-scoped
    stored = kube.get("serving.kserve.io/v1beta1", "InferenceService", "fraud", "ml")
    assert stored is not None and stored["spec"] == {"predictor": {"minReplicas": 1}} and stored["metadata"]["uid"]
    assert report.results[0].namespace is None and report.results[1].namespace == "ml"


def test_a_second_apply_of_the_same_objects_changes_nothing(kube: FakeKubeApi) -> None:
    _apply(kube)
    versions = {k: s.obj["metadata"]["resourceVersion"] for k, s in kube.objects.items()}
    again = _apply(kube)
    assert again.changed == 0 and again.count("unchanged") == len(OBJECTS)
    assert again.totals() == "7 objects: 0 created, 0 configured, 7 unchanged"
    assert {k: s.obj["metadata"]["resourceVersion"] for k, s in kube.objects.items()} == versions


def test_changing_one_field_configures_exactly_that_object(kube: FakeKubeApi) -> None:
    _apply(kube)
    changed = copy.deepcopy(OBJECTS)
    changed[0]["spec"]["predictor"]["minReplicas"] = 2
    report = _apply(kube, changed)
    assert [r.ref for r in report.results if r.action != "unchanged"] == ["InferenceService/fraud"]
    assert report.count("configured") == 1 and report.changed == 1
    stored = kube.get("serving.kserve.io/v1beta1", "InferenceService", "fraud", "ml")
    assert stored is not None and stored["spec"]["predictor"]["minReplicas"] == 2
    assert stored["metadata"]["generation"] == 2


@pytest.mark.parametrize(
    ("group", "kind", "install"),
    [("serving.kserve.io", "InferenceService", "install KServe"), ("argoproj.io", "CronWorkflow", "Argo Workflows")],
)
def test_a_missing_crd_names_the_kind_and_the_prerequisite_and_applies_nothing(
    group: str, kind: str, install: str
) -> None:
    with FakeKubeApi(without_groups={group}) as kube, pytest.raises(DeployError) as caught:
        _apply(kube)
    message = str(caught.value)
    assert f"{kind} ({group}/" in message and install in message and "nothing applied" in message
    assert kube.patches == []


def test_an_api_error_names_the_object_and_the_servers_message(kube: FakeKubeApi) -> None:
    denied = 'configmaps "fraud-config" is forbidden: User "ci" cannot patch resource "configmaps" in "ml"'
    kube.reject("ConfigMap", "fraud-config", 403, "Forbidden", denied)
    with pytest.raises(DeployError, match=r"ConfigMap/fraud-config in namespace 'ml': .*\(403 Forbidden\)") as caught:
        _apply(kube)
    assert denied in str(caught.value)


def test_dry_run_contacts_nothing_and_returns_the_yaml(kube: FakeKubeApi) -> None:
    report = _apply(kube, dry_run=True)
    assert kube.requests == []
    assert {r.action for r in report.results} == {"skipped"}
    docs = list(yaml.safe_load_all(report.manifest))
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in docs] == APPLY_ORDER
    assert "kfloop.yaml: |" in report.manifest  # multi-line strings as blocks


def test_a_server_dry_run_reports_what_would_change_and_stores_nothing(kube: FakeKubeApi) -> None:
    report = _apply(kube, server_dry_run=True)
    assert report.count("created") == len(OBJECTS) and kube.objects == {}
    assert all(p.query.get("dryRun") == "All" for p in kube.patches)
    _apply(kube)
    changed = copy.deepcopy(OBJECTS)
    changed[2]["data"]["extra"] = "1"
    would = _apply(kube, changed, server_dry_run=True)
    assert [r.ref for r in would.results if r.action == "configured"] == ["ConfigMap/fraud-config"]
    assert "extra" not in (kube.get("v1", "ConfigMap", "fraud-config", "ml") or {})["data"]


def test_no_kubeconfig_outside_a_pod_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DeployError, match=r"no cluster to talk to: no kubeconfig"):
        connect()


# --- the commands -----------------------------------------------------------------------------------------
def test_schedules_apply_applies_every_cronworkflow_and_a_second_run_changes_nothing(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    args = ["schedules", "apply", "-c", CLUSTER_CONFIG, "--kubeconfig", _kubeconfig(kube, tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 objects: 4 created, 0 configured, 0 unchanged" in first.output
    stored = sorted(name for (_, plural, ns, name) in kube.objects if plural == "cronworkflows" and ns == "kubeflow")
    assert stored == ["fraud-demo-drift-check", "fraud-demo-materialize", "fraud-demo-report", "fraud-demo-retention"]
    assert {r.authorization for r in kube.patches} == {"Bearer fake-token"}  # the kubeconfig's credentials
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "4 objects: 0 created, 0 configured, 4 unchanged" in second.output


def test_schedules_apply_dry_run_prints_the_yaml_and_contacts_nothing(kube: FakeKubeApi, tmp_path: Path) -> None:
    args = ["schedules", "apply", "-c", CLUSTER_CONFIG, "--dry-run", "--kubeconfig", _kubeconfig(kube, tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert kube.requests == []
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [("CronWorkflow", "kubeflow")] * 4


def test_schedules_apply_without_argo_is_one_line_naming_the_prerequisite(tmp_path: Path) -> None:
    with FakeKubeApi(without_groups={"argoproj.io"}) as kube:
        result = runner.invoke(
            app, ["schedules", "apply", "-c", CLUSTER_CONFIG, "--kubeconfig", _kubeconfig(kube, tmp_path)]
        )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown kind, nothing applied: CronWorkflow (argoproj.io/v1alpha1)")
    assert "Argo Workflows" in result.stderr and "Traceback" not in result.output


def test_an_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    with FakeKubeApi() as kube:
        kubeconfig = _kubeconfig(kube, tmp_path)
        url = kube.url
    result = runner.invoke(app, ["schedules", "apply", "-c", CLUSTER_CONFIG, "--kubeconfig", kubeconfig])
    assert result.exit_code == 1
    assert f"error: the Kubernetes API at {url} is unreachable" in result.stderr


def test_deploy_applies_the_chart_and_a_second_deploy_changes_nothing(kube: FakeKubeApi, tmp_path: Path) -> None:
    """The real chart (helm/kfloop through kfloop.kube.chart), a values file and --set, against the fake."""
    values = tmp_path / "values.yaml"
    values.write_text("monitoring: {prometheusRule: {enabled: true}}\n")
    args = ["deploy", "-c", CLUSTER_CONFIG, "-f", str(values), "--kubeconfig", _kubeconfig(kube, tmp_path)]
    v7 = [*args, "--set", "inferenceService.modelVersion=v7"]

    printed = runner.invoke(app, [*v7, "--dry-run"])
    assert printed.exit_code == 0, printed.output
    assert kube.requests == []
    docs = list(yaml.safe_load_all(printed.stdout))
    assert docs[0]["kind"] == "NetworkPolicy" and docs[-1]["kind"] == "PrometheusRule"  # apply order
    assert "InferenceService" in {d["kind"] for d in docs}

    first = runner.invoke(app, v7)
    assert first.exit_code == 0, first.output
    assert f"{len(docs)} objects: {len(docs)} created, 0 configured, 0 unchanged" in first.output
    assert {(plural, ns) for (_, plural, ns, _) in kube.objects} >= {("inferenceservices", "kubeflow")}
    again = runner.invoke(app, v7)
    n = len(docs) - 1  # all but the InferenceService, which exists now: kept as it is
    assert f"{len(docs)} objects: 0 created, 0 configured, {n} unchanged, 1 kept" in again.output
    # a deploy never moves the served version (the pipeline's deploy step does): v8 asked here changes nothing
    v8 = runner.invoke(app, [*args, "--set", "inferenceService.modelVersion=v8", "--set", "redis.maxMemory=300mb"])
    assert f"{len(docs)} objects: 0 created, 1 configured, {n - 1} unchanged, 1 kept" in v8.output
    served = kube.get("serving.kserve.io/v1beta1", "InferenceService", "fraud-detector", "kubeflow")
    assert served is not None and "/v7/" in json.dumps(served) and "/v8/" not in json.dumps(served)
