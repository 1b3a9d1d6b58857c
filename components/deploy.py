"""Deploy stage: the registry's champion → the KServe InferenceService that serves it.

Locally (a workspace directory) nothing is deployed: a running ``kfloop serve`` polls the registry and
switches to a new champion by itself. On a cluster (S3 workspace) the step creates the InferenceService,
updates it when it serves another version (as a canary when ``serving.canary_traffic_percent`` is set and
the version is newer), replaces it when it serves the champion with another rendered spec (image,
resources, autoscaling, config: its ``kfloop.io/spec-hash`` annotation differs; no new canary, the version
is the same, but one still in progress keeps its share), and leaves it alone when both version and spec
hash match. The registry is read again rather
than trusting the evaluate step's answer, so a promotion or rollback by hand in between wins.
"""

from typing import Any, Protocol

from kfloop.audit import events as audit_events
from kfloop.config import Config
from kfloop.errors import DeployError
from kfloop.lineage.run import emits
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


class CustomObjectsApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the step uses (tests pass a fake)."""

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        """The object; raises ``ApiException`` (status 404 when absent)."""

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict
    ) -> Any: ...

    def replace_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict
    ) -> Any: ...


def _in_cluster_api() -> CustomObjectsApi:
    """The API of the cluster this pod runs in (its ServiceAccount), else the local kubeconfig's."""
    from kubernetes import client
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        try:
            kube_config.load_kube_config()
        except (kube_config.ConfigException, OSError) as err:
            raise DeployError(
                f"cannot deploy to KServe: no in-cluster service account and no kubeconfig ({err}); the deploy "
                "step runs inside the cluster, or use a local workspace (storage.type: local) off the cluster"
            ) from err
    return client.CustomObjectsApi()


def _deploy_to_cluster(config: Config, storage: Storage, version: str, api: CustomObjectsApi) -> dict:
    """Create, update (canary when configured) or keep the InferenceService so it serves ``version``."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from kfloop.serving.inference_service import (
        MANAGED_BY_LABEL,
        PROJECT_LABEL,
        SPEC_HASH_ANNOTATION,
        VERSION_LABEL,
        build_inference_service,
        inference_service_manifest,
        storage_uri_for,
    )

    name, namespace = config.training.model_name, config.cluster.namespace
    where = f"InferenceService {name!r} in namespace {namespace!r}"
    uri = storage_uri_for(storage, config, version)
    result = {"version": version, "service": name, "namespace": namespace, "storage_uri": uri}
    try:
        try:
            existing = api.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
            body = inference_service_manifest(build_inference_service(config, version, uri))
            api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, body)
            result["spec_hash"] = body["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
            return {**result, "action": "created", "previous": None, "canary_traffic_percent": None}
        meta = existing.get("metadata") or {}
        labels = meta.get("labels") or {}
        # kfloop's own (this step, or the Helm chart's for this project): anything else is someone else's
        if labels.get(MANAGED_BY_LABEL) != "kfloop" and labels.get(PROJECT_LABEL) != config.project:
            raise DeployError(
                f"{where} exists but kfloop did not create it (no label {MANAGED_BY_LABEL}=kfloop or "
                f"{PROJECT_LABEL}={config.project}): delete it or choose another training.model_name"
            )
        served = labels.get(VERSION_LABEL)
        # a rollback goes to the old version at once, never as a canary; nor does a new spec of the same one,
        # unless that version is still a canary: its share stays, else the spec change would end the canary
        live_share = ((existing.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        keep_share = served == version and live_share is not None and config.serving.canary_traffic_percent
        canary = bool(keep_share) or (served != version and _newer(version, served))
        body = inference_service_manifest(build_inference_service(config, version, uri, canary=canary))
        if keep_share:  # the share in force (perhaps raised by hand), not the configured starting share
            body["spec"]["predictor"]["canaryTrafficPercent"] = live_share
        live_hash = (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        wanted_hash = result["spec_hash"] = body["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        if served == version and live_hash == wanted_hash:
            return {**result, "action": "unchanged", "previous": served, "canary_traffic_percent": None}
        if served == version:
            result["reason"] = (
                f"serves {version} already with another spec ({SPEC_HASH_ANNOTATION} {_short(live_hash)} → "
                f"{_short(wanted_hash)}): image, resources, autoscaling or config changed"
                + (f"; still a canary at {live_share} %" if keep_share else "")
            )
        # A full update (PUT at the version we read), not a merge patch: a merge patch would leave behind a
        # canaryTrafficPercent or logger the config no longer has. Labels and annotations others set stay.
        body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
        body["metadata"]["labels"] = {**labels, **body["metadata"]["labels"]}
        if labels.get(MANAGED_BY_LABEL) == "Helm":  # the chart's object stays its release's (helm upgrade checks)
            body["metadata"]["labels"][MANAGED_BY_LABEL] = "Helm"
        body["metadata"]["annotations"] = {**(meta.get("annotations") or {}), **body["metadata"]["annotations"]}
        api.replace_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name, body)
    except (ApiException, HTTPError, OSError) as err:
        from kfloop.kube.apply import api_message

        raise DeployError(f"{where}: the Kubernetes API failed: {api_message(err)}") from err
    percent = (live_share if keep_share else config.serving.canary_traffic_percent) if canary else None
    return {**result, "action": "updated", "previous": served, "canary_traffic_percent": percent}


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"


def _newer(version: str, served: str | None) -> bool:
    """``version`` was registered after ``served`` (registry versions are v1, v2, …)."""
    try:
        return int(version.removeprefix("v")) > int(str(served).removeprefix("v"))
    except ValueError:
        return True


@emits("deploy")
def deploy_champion(config: Config, storage: Storage, api: CustomObjectsApi | None = None) -> dict:
    """Make the serving side follow the registry's champion; returns what was done (``action``) and why.

    ``api`` is the Kubernetes custom-objects API (default: the cluster's, from the pod's ServiceAccount).
    """
    champion = ModelRegistry(storage, config.training.model_name).champion()
    if champion is None:
        reason = f"model {config.training.model_name!r} has no champion yet: nothing to serve"
        return {"action": "none", "version": None, "reason": reason}
    if config.storage.type == "local":
        return {
            "action": "hot-switch",
            "version": champion.version,
            "message": f"a running `kfloop serve` switches to {champion.version} within serving.reload_seconds "
            f"({config.serving.reload_seconds:g} s)",
        }
    result = _deploy_to_cluster(config, storage, champion.version, api or _in_cluster_api())
    if result["action"] != "unchanged":  # created or updated: the cluster serves something else now
        audit_events.deploy_apply(storage, champion.model, champion.version, _target(result), **_audited(result))
    return result


def _target(result: dict) -> str:
    return f"inferenceservice:{result['namespace']}/{result['service']}"


def _audited(result: dict) -> dict:
    keep = ("action", "previous", "canary_traffic_percent", "storage_uri", "spec_hash", "reason")
    return {k: result.get(k) for k in keep if result.get(k) is not None}


def run_deploy_step(config_json: str, evaluated: str = "", api: CustomObjectsApi | None = None) -> dict:
    """Entrypoint inside the pipeline step. ``evaluated`` (the champion the evaluate step reported) is
    recorded beside the outcome; the registry decides what is served."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return {**deploy_champion(config, storage, api), "evaluated": evaluated or None}
