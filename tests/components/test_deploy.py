"""Deploy step: local hot-switch, no champion, and create / canary update / spec change / unchanged on a
cluster.

The cluster branch talks to a fake of ``kubernetes.client.CustomObjectsApi`` (a mock): no Kubernetes API
server, nor the KServe CRD, can run on this machine. The fake keeps objects in memory and enforces what
the real API does that the step relies on: 404 for an absent object, 409 for a create over an existing one
or a replace at a stale ``resourceVersion``. The workspace is real S3 (moto), so the model URI is the one
KServe's storage initializer would download.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kfloop.components.deploy import DeployError, run_deploy_step
from kfloop.config import Config, config_to_json, load_config, parse_config
from kfloop.registry import ModelRegistry
from kfloop.serving.inference_service import SPEC_HASH_ANNOTATION as SPEC_HASH
from kfloop.storage import LocalStorage, S3Storage, Storage
from tests.conftest import REPO, S3_CREDS, demo_config

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
MODEL = "fraud-detector"
ISVC = ("serving.kserve.io", "v1beta1", "kubeflow", "inferenceservices")


class FakeCustomObjects:
    """In-memory stand-in for the Kubernetes custom-objects API (see the module docstring for why)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []
        self.fail: ApiException | None = None

    def _check(self, verb: str, group: str, version: str, namespace: str, plural: str) -> None:
        self.calls.append(verb)
        assert (group, version, namespace, plural) == ISVC
        if self.fail is not None:
            raise self.fail

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict:
        self._check("get", group, version, namespace, plural)
        if (namespace, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[namespace, name])

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict
    ) -> dict:
        self._check("create", group, version, namespace, plural)
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[namespace, name] = {**copy.deepcopy(body), "status": {}}
        self.objects[namespace, name]["metadata"]["resourceVersion"] = "1"
        return body

    def replace_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict
    ) -> dict:
        self._check("replace", group, version, namespace, plural)
        stored = self.objects[namespace, name]["metadata"]["resourceVersion"]
        if body["metadata"].get("resourceVersion") != stored:
            raise ApiException(status=409, reason="Conflict")
        self.objects[namespace, name] = {**copy.deepcopy(body), "status": {}}
        self.objects[namespace, name]["metadata"]["resourceVersion"] = str(int(stored) + 1)
        return body

    def served(self) -> dict:
        return self.objects["kubeflow", MODEL]


def add_version(storage: Storage, tmp_path: Path, *, promote: bool) -> str:
    """Register a (tiny) model version; optionally make it the champion."""
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.pt").write_bytes(b"weights")
    registry = ModelRegistry(storage, MODEL)
    version = registry.register(model_dir, {"threshold": 0.5}).version
    if promote:
        registry.promote(version, "test")
    return version


def predictor(body: dict) -> dict:
    return body["spec"]["predictor"]


def storage_uri(body: dict) -> str:
    env = {e["name"]: e.get("value") for e in predictor(body)["containers"][0]["env"]}
    return env["STORAGE_URI"]


# --- local workspace --------------------------------------------------------------------------------------


def test_local_workspace_is_a_hot_switch_and_never_calls_kubernetes(tmp_path: Path) -> None:
    api = FakeCustomObjects()
    config_json = config_to_json(demo_config(tmp_path / "ws"))
    none = run_deploy_step(config_json, "", api=api)
    assert none["action"] == "none" and none["version"] is None
    assert "no champion yet" in none["reason"]
    add_version(LocalStorage(tmp_path / "ws"), tmp_path, promote=True)
    v2 = add_version(LocalStorage(tmp_path / "ws"), tmp_path, promote=True)
    result = run_deploy_step(config_json, v2, api=api)
    assert (result["action"], result["version"], result["evaluated"]) == ("hot-switch", "v2", "v2")
    assert "`kfloop serve` switches to v2 within serving.reload_seconds (2 s)" in result["message"]
    assert api.calls == []


# --- cluster (S3 workspace, fake Kubernetes API) ----------------------------------------------------------


@pytest.fixture
def cluster(moto_endpoint: str, s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A deploy function for the cluster config on the moto workspace, with S3 keys in the step's env."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_CREDS.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_CREDS.secret_key)

    def config(image: str | None, serving: dict) -> Config:
        data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
        data["storage"] |= {"endpoint": moto_endpoint, "bucket": s3_storage.bucket, "prefix": "ws", "secure": False}
        data["serving"] |= {"canary_traffic_percent": None, **serving}  # only when a test asks for one
        if data["serving"]["canary_traffic_percent"] is not None:
            data["serving"]["deployment_mode"] = "knative"  # KServe rolls canaries out with Knative revisions
        if image is not None:
            data["cluster"]["image"] = image
        return parse_config(data, "test config")

    def deploy(api: FakeCustomObjects | None, image: str | None = None, **serving: Any) -> dict:
        return run_deploy_step(config_to_json(config(image, serving)), "", api=api)

    return deploy


@pytest.mark.s3
def test_cluster_without_a_champion_deploys_nothing(cluster: Any, s3_storage: S3Storage, tmp_path: Path) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=False)  # a candidate only
    assert cluster(api)["action"] == "none"
    assert api.calls == []


@pytest.mark.s3
def test_cluster_creates_the_service_when_absent(cluster: Any, s3_storage: S3Storage, tmp_path: Path) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    result = cluster(api, canary_traffic_percent=25)
    uri = f"s3://{s3_storage.bucket}/ws/registry/{MODEL}/v1/"
    assert result["action"] == "created"
    assert (result["version"], result["storage_uri"], result["canary_traffic_percent"]) == ("v1", uri, None)
    assert api.calls == ["get", "create"]
    body = api.served()
    assert body["metadata"]["labels"]["kfloop.io/model-version"] == "v1"
    assert storage_uri(body) == uri
    assert "canaryTrafficPercent" not in predictor(body)  # nothing to split traffic with yet


@pytest.mark.s3
def test_cluster_rolls_out_a_new_champion_as_a_canary(cluster: Any, s3_storage: S3Storage, tmp_path: Path) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    cluster(api)
    api.served()["metadata"]["labels"]["team"] = "risk"  # set by someone else: must survive the update
    add_version(s3_storage, tmp_path, promote=True)
    result = cluster(api, canary_traffic_percent=25)
    assert (result["action"], result["version"], result["previous"]) == ("updated", "v2", "v1")
    assert result["canary_traffic_percent"] == 25
    assert api.calls[-2:] == ["get", "replace"]
    body = api.served()
    assert predictor(body)["canaryTrafficPercent"] == 25
    assert storage_uri(body) == f"s3://{s3_storage.bucket}/ws/registry/{MODEL}/v2/"
    assert body["metadata"]["labels"]["kfloop.io/model-version"] == "v2"
    assert body["metadata"]["labels"]["team"] == "risk"
    assert body["metadata"]["resourceVersion"] == "2"


@pytest.mark.s3
def test_cluster_update_without_canary_drops_an_old_canary_split(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    add_version(s3_storage, tmp_path, promote=False)
    cluster(api)
    ModelRegistry(s3_storage, MODEL).promote("v2", "test")
    cluster(api, canary_traffic_percent=10)
    ModelRegistry(s3_storage, MODEL).rollback("v2 misbehaves")  # champion v1 again
    result = cluster(api)  # canary no longer configured: the whole traffic goes to v1
    assert (result["action"], result["version"], result["previous"]) == ("updated", "v1", "v2")
    assert result["canary_traffic_percent"] is None
    assert "canaryTrafficPercent" not in predictor(api.served())
    assert storage_uri(api.served()).endswith(f"/registry/{MODEL}/v1/")


@pytest.mark.s3
def test_cluster_leaves_a_service_that_serves_the_champion_with_the_same_spec(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    created = cluster(api)
    before = copy.deepcopy(api.served())
    assert before["metadata"]["annotations"][SPEC_HASH] == created["spec_hash"]
    result = cluster(api)
    assert (result["action"], result["version"], result["spec_hash"]) == ("unchanged", "v1", created["spec_hash"])
    assert api.calls == ["get", "create", "get"]
    assert api.served() == before


@pytest.mark.s3
@pytest.mark.parametrize(
    "change",
    [
        {"image": "ghcr.io/kfloop/kfloop:0.1.1"},
        {"predictor_resources": {"cpu_request": "2", "cpu_limit": "4", "memory_request": "3Gi", "memory_limit": "6Gi"}},
        {"autoscaling": {"min_replicas": 2, "max_replicas": 9, "scale_metric": "memory", "scale_target": 75}},
        {"unknown_entity": "reject"},  # config the serving processes read (KFLOOP_CONFIG_JSON)
    ],
    ids=["image", "resources", "autoscaling", "config"],
)
def test_cluster_replaces_the_service_when_its_spec_changed_for_the_same_version(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path, change: dict
) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    first = cluster(api)
    api.served()["metadata"]["annotations"]["team"] = "risk"  # set by someone else: must survive the update
    result = cluster(api, canary_traffic_percent=25, **change)  # same version: a canary is never started
    assert (result["action"], result["version"], result["previous"]) == ("updated", "v1", "v1")
    assert result["canary_traffic_percent"] is None and result["spec_hash"] != first["spec_hash"]
    assert "serves v1 already with another spec" in result["reason"]
    assert api.calls == ["get", "create", "get", "replace"]
    body = api.served()
    assert body["metadata"]["annotations"][SPEC_HASH] == result["spec_hash"]
    assert body["metadata"]["annotations"]["team"] == "risk"
    assert body["metadata"]["labels"]["kfloop.io/model-version"] == "v1"
    assert "canaryTrafficPercent" not in predictor(body)
    (container,) = predictor(body)["containers"]
    if "image" in change:
        assert container["image"] == change["image"]
    if "predictor_resources" in change:
        assert container["resources"]["limits"] == {"cpu": "4", "memory": "6Gi"}
    if "autoscaling" in change:
        assert (predictor(body)["minReplicas"], predictor(body)["maxReplicas"]) == (2, 9)
    again = cluster(api, canary_traffic_percent=25, **change)  # applied: nothing left to do
    assert again["action"] == "unchanged" and api.calls[-1] == "get"


@pytest.mark.s3
def test_cluster_keeps_a_canary_in_progress_when_nothing_changed(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    """The canary share is how a version rolls out, not part of its spec: re-running must not end it."""
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    cluster(api, canary_traffic_percent=25)
    add_version(s3_storage, tmp_path, promote=True)
    assert cluster(api, canary_traffic_percent=25)["canary_traffic_percent"] == 25
    before = copy.deepcopy(api.served())
    result = cluster(api, canary_traffic_percent=25)
    assert (result["action"], result["version"]) == ("unchanged", "v2")
    assert api.served() == before and predictor(before)["canaryTrafficPercent"] == 25


@pytest.mark.s3
def test_a_spec_change_during_a_canary_keeps_the_canary_share(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    """A new image (or any config) while v2 is still a canary: replacing it without the share would hand v2
    all the traffic at once; the share in force (here raised by hand) stays, KServe splits with v1 as before."""
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    cluster(api, canary_traffic_percent=25)
    add_version(s3_storage, tmp_path, promote=True)
    cluster(api, canary_traffic_percent=25)
    predictor(api.served())["canaryTrafficPercent"] = 40  # the operator moved the canary on
    result = cluster(api, image="ghcr.io/kfloop/kfloop:0.1.1", canary_traffic_percent=25)
    assert (result["action"], result["version"], result["previous"]) == ("updated", "v2", "v2")
    assert result["canary_traffic_percent"] == 40 and "still a canary at 40 %" in result["reason"]
    body = api.served()
    assert predictor(body)["canaryTrafficPercent"] == 40
    assert predictor(body)["containers"][0]["image"] == "ghcr.io/kfloop/kfloop:0.1.1"
    assert body["metadata"]["annotations"][SPEC_HASH] == result["spec_hash"]
    again = cluster(api, image="ghcr.io/kfloop/kfloop:0.1.1", canary_traffic_percent=25)
    assert again["action"] == "unchanged" and predictor(api.served())["canaryTrafficPercent"] == 40
    ended = cluster(api, image="ghcr.io/kfloop/kfloop:0.1.2")  # canary no longer configured: all traffic to v2
    assert ended["canary_traffic_percent"] is None and "canaryTrafficPercent" not in predictor(api.served())


@pytest.mark.s3
def test_cluster_replaces_a_service_deployed_without_a_spec_hash(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    cluster(api)
    del api.served()["metadata"]["annotations"][SPEC_HASH]  # as deployed by an older kfloop
    result = cluster(api)
    assert (result["action"], result["previous"]) == ("updated", "v1")
    assert "kfloop.io/spec-hash none →" in result["reason"]
    assert api.served()["metadata"]["annotations"][SPEC_HASH] == result["spec_hash"]


@pytest.mark.s3
def test_cluster_refuses_a_service_kfloop_did_not_create(cluster: Any, s3_storage: S3Storage, tmp_path: Path) -> None:
    api = FakeCustomObjects()
    api.objects["kubeflow", MODEL] = {"metadata": {"name": MODEL, "resourceVersion": "7", "labels": {}}, "spec": {}}
    add_version(s3_storage, tmp_path, promote=True)
    with pytest.raises(DeployError, match=r"InferenceService 'fraud-detector' in namespace 'kubeflow' exists but"):
        cluster(api)
    assert api.calls == ["get"]


@pytest.mark.s3
def test_cluster_api_errors_name_the_service_and_the_reason(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path
) -> None:
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    denied = ApiException(status=403, reason="Forbidden")
    denied.body = json.dumps(
        {"kind": "Status", "message": "inferenceservices.serving.kserve.io is forbidden: cannot get resource"}
    )
    api.fail = denied
    with pytest.raises(
        DeployError,
        match=r"InferenceService 'fraud-detector' in namespace 'kubeflow': the Kubernetes API failed: "
        r"inferenceservices\.serving\.kserve\.io is forbidden",
    ):
        cluster(api)
    api.fail = ApiException(status=500, reason="Internal Server Error")  # no Status body
    with pytest.raises(DeployError, match=r"'kubeflow': the Kubernetes API failed: 500 Internal Server Error"):
        cluster(api)


@pytest.mark.s3
def test_cluster_without_any_kubernetes_config_says_so(
    cluster: Any, s3_storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    add_version(s3_storage, tmp_path, promote=True)
    with pytest.raises(DeployError, match="no in-cluster service account and no kubeconfig"):
        cluster(None)


@pytest.mark.s3
def test_cluster_rollback_is_never_a_canary(cluster: Any, s3_storage: S3Storage, tmp_path: Path) -> None:
    """Back to an older version at once: a canary would leave most traffic on the version rolled back from."""
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    add_version(s3_storage, tmp_path, promote=False)
    cluster(api, canary_traffic_percent=10)
    ModelRegistry(s3_storage, MODEL).promote("v2", "newer")
    assert cluster(api, canary_traffic_percent=10)["canary_traffic_percent"] == 10  # forward: canary
    ModelRegistry(s3_storage, MODEL).rollback("v2 misbehaves")
    result = cluster(api, canary_traffic_percent=10)
    assert (result["action"], result["version"], result["canary_traffic_percent"]) == ("updated", "v1", None)
    assert "canaryTrafficPercent" not in predictor(api.served())
