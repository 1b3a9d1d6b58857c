"""The KServe InferenceService that serves one registry version: a Feast transformer in front of the predictor.

Built only from the KServe SDK's models (and the Kubernetes client's), so every field is one the
InferenceService schema has. The pieces and why:

- **predictor**: a custom container (``kserve-container``) running ``python3 -m kfloop.serving predictor``.
  KServe's storage initializer is triggered for a custom container by the ``STORAGE_URI`` env var on that
  container (the controller's ``CustomPredictor.GetStorageUri``); it downloads the version's folder into
  ``/mnt/models`` before the server starts. ``PROTOCOL`` tells KServe which data plane it speaks.
- **transformer**: ``python3 -m kfloop.serving transformer``, which looks up the entity's features in the
  online store (Redis) and calls the predictor; the controller appends ``--model_name`` and
  ``--predictor_host``, we pass ``--predictor_protocol`` and the ports.
- **credentials**: the storage initializer does not see pod env vars; it takes S3 keys from the
  ServiceAccount's Secrets (annotated ``serving.kserve.io/s3-endpoint`` and ``serving.kserve.io/s3-usehttps``,
  keys ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), so ``cluster.service_account`` names that
  ServiceAccount. The kfloop processes get the Secrets the config names as env vars
  (``kfloop.cluster_env``), never their values.
- **ports**: Knative routes to exactly one declared container port, whose name picks the protocol
  (``http1``, or ``h2c`` for gRPC): the predictor declares the gRPC port when ``predictor_protocol`` is
  ``grpc-v2``, the HTTP port otherwise; the transformer always declares HTTP.
- **spec hash**: the annotation ``kfloop.io/spec-hash`` is the SHA-256 of everything rendered (canonical
  JSON) except the hash itself, fields the API server sets, and the canary share (how a version rolls out,
  not what is served). The deploy step compares it with the live object's annotation, because the live
  spec carries the controller's defaults and cannot be compared field by field.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import kserve
import yaml
from kserve import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1LoggerSpec,
    V1beta1PredictorSpec,
    V1beta1TransformerSpec,
)
from kubernetes.client import (
    ApiClient,
    V1Container,
    V1ContainerPort,
    V1EnvVar,
    V1HTTPGetAction,
    V1LocalObjectReference,
    V1ObjectMeta,
    V1Probe,
    V1ResourceRequirements,
    V1TCPSocketAction,
)

from kfloop.cluster_env import env_vars
from kfloop.config import Config, Resources, ServingConfig, config_to_json
from kfloop.kube.security import POD_LABEL, container_security_context, pod_security_context, tmp_mount, tmp_volume
from kfloop.layout import model_version_prefix
from kfloop.storage import Storage

__all__ = [
    "CONFIG_ENV",
    "MANAGED_BY_LABEL",
    "MODEL_DIR",
    "PROJECT_LABEL",
    "SPEC_HASH_ANNOTATION",
    "VERSION_LABEL",
    "build_inference_service",
    "inference_service_manifest",
    "render_yaml",
    "spec_hash",
    "storage_uri_for",
]

#: Where KServe's storage initializer puts the model files (its ``DefaultModelLocalMountPath``).
MODEL_DIR = "/mnt/models"
#: The env var both serving processes read the whole config from (``config_to_json`` text).
CONFIG_ENV = "KFLOOP_CONFIG_JSON"
#: The container KServe treats as the model server of a component (storage initializer, args, probes).
CONTAINER_NAME = "kserve-container"
VERSION_LABEL = "kfloop.io/model-version"
PROJECT_LABEL = "kfloop.io/project"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
STORAGE_URI_ANNOTATION = "kfloop.io/storage-uri"
SPEC_HASH_ANNOTATION = "kfloop.io/spec-hash"
#: KServe's deployment mode per InferenceService; the legacy values every KServe release since 0.11 reads
#: (0.16+ also calls them Standard and Knative).
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEPLOYMENT_MODES = {"raw": "RawDeployment", "knative": "Serverless"}
#: Kubernetes' default grace period (the pod's, in raw mode).
DEFAULT_GRACE_SECONDS = 30
#: Metadata the API server sets on a stored object: never part of what kfloop renders.
#: Knative's default revision timeout, which is the pod's terminationGracePeriodSeconds in KServe's default
#: mode (KServe refuses the field itself there), and its default maximum for one.
KNATIVE_TIMEOUT, KNATIVE_MAX_TIMEOUT = 300, 600
#: Before the transformer gets SIGTERM, queue-proxy drains; after, the servers stop; then the log's last flush.
SHUTDOWN_MARGIN = 60


def _shutdown_seconds(serving: ServingConfig) -> int | None:
    """How long the transformer needs after SIGTERM (drain, stop, the log's last flush); None without a log."""
    if serving.inference_log.sink_url or not serving.inference_log.enabled:
        return None  # the log sink writes the log, not the transformer
    return int(-(-serving.inference_log.shutdown_timeout_seconds // 1) + SHUTDOWN_MARGIN)


def transformer_timeout(serving: ServingConfig) -> int | None:
    """Knative mode: the transformer's revision timeout (its grace period) when Knative's default would cut the
    inference log's last flush short; None (the default) otherwise, so the rendered spec does not change."""
    needed = _shutdown_seconds(serving)
    if serving.deployment_mode != "knative" or needed is None:
        return None
    return needed if needed > KNATIVE_TIMEOUT else None


def transformer_grace_seconds(serving: ServingConfig) -> int | None:
    """Raw mode: the pod's terminationGracePeriodSeconds when Kubernetes' 30 s would cut the last flush short."""
    needed = _shutdown_seconds(serving)
    if serving.deployment_mode != "raw" or needed is None:
        return None
    return needed if needed > DEFAULT_GRACE_SECONDS else None


_RUNTIME_METADATA = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "selfLink")


def storage_uri_for(storage: Storage, config: Config, version: str) -> str:
    """The version's registry folder as KServe reads it: ``s3://<bucket>/<prefix>/registry/<model>/<version>/``.

    The trailing slash matters: the storage initializer downloads every object whose key starts with the
    URI's path, so ``.../v1`` would also pull ``v10/``. A local workspace gives a ``file://`` URI (useful
    for reading a manifest; a cluster cannot download it).
    """
    uri = storage.uri(model_version_prefix(config.training.model_name, version))
    if "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    return uri.rstrip("/") + "/"


def _resources(res: Resources) -> V1ResourceRequirements:
    return V1ResourceRequirements(
        requests={"cpu": res.cpu_request, "memory": res.memory_request},
        limits={"cpu": res.cpu_limit, "memory": res.memory_limit},
    )


def _env(config: Config, *, online_store: bool) -> list[V1EnvVar]:
    """The config as JSON, plain settings, and each Secret as a ``secretKeyRef`` (never its value)."""
    env = [V1EnvVar(name=CONFIG_ENV, value=config_to_json(config))]
    env += env_vars(config, online_store=online_store)
    return env


def _port(serving: ServingConfig, *, grpc: bool) -> V1ContainerPort:
    if grpc:
        return V1ContainerPort(name="h2c", container_port=serving.grpc_port, protocol="TCP")
    return V1ContainerPort(name="http1", container_port=serving.http_port, protocol="TCP")


def _probes(serving: ServingConfig, *, grpc: bool) -> dict[str, V1Probe]:
    """Readiness (``/v2/health/ready``: the model is loaded, the online store answers) and liveness
    (``/v2/health/live``) on the HTTP port. Knative allows a probe only on the container's one declared port,
    so there a gRPC-only predictor is probed on its TCP port."""
    if grpc and serving.deployment_mode == "knative":
        ready = live = {"tcp_socket": V1TCPSocketAction(port=serving.grpc_port)}
    else:
        ready = {"http_get": V1HTTPGetAction(path="/v2/health/ready", port=serving.http_port)}
        live = {"http_get": V1HTTPGetAction(path="/v2/health/live", port=serving.http_port)}
    return {
        "readiness_probe": V1Probe(**ready, period_seconds=5, failure_threshold=3, timeout_seconds=2),
        "liveness_probe": V1Probe(
            **live, initial_delay_seconds=10, period_seconds=10, failure_threshold=6, timeout_seconds=5
        ),
    }


def _pod(config: Config) -> dict[str, Any]:
    """The component's pod-level fields: restricted security context, the /tmp emptyDir, and no API token (the
    servers never call the Kubernetes API; KServe's controller hands the storage initializer its S3 keys)."""
    pull = [V1LocalObjectReference(name=name) for name in config.cluster.image_pull_secrets]
    return {
        "security_context": pod_security_context(config.cluster.run_as_user),
        "volumes": [tmp_volume()],
        "automount_service_account_token": False,
        "image_pull_secrets": pull or None,
    }


def _port_args(serving: ServingConfig) -> list[str]:
    return ["--http_port", str(serving.http_port), "--grpc_port", str(serving.grpc_port)]


def _predictor(config: Config, version: str, storage_uri: str, *, canary: bool) -> V1beta1PredictorSpec:
    serving, scaling = config.serving, config.serving.autoscaling
    grpc = serving.predictor_protocol == "grpc-v2"
    container = V1Container(
        name=CONTAINER_NAME,
        image=config.cluster.image,
        command=["python3", "-m", "kfloop.serving", "predictor"],
        args=["--model_dir", MODEL_DIR, *_port_args(serving)],
        env=[
            V1EnvVar(name="STORAGE_URI", value=storage_uri),  # triggers KServe's storage initializer
            V1EnvVar(name="PROTOCOL", value="v1" if serving.predictor_protocol == "v1" else "v2"),
            *_env(config, online_store=False),  # the predictor scores columns; it never opens Feast
        ],
        ports=[_port(serving, grpc=grpc)],
        resources=_resources(serving.predictor_resources),
        security_context=container_security_context(),
        volume_mounts=[tmp_mount()],
        **_probes(serving, grpc=grpc),
    )
    return V1beta1PredictorSpec(
        containers=[container],
        **_pod(config),
        labels={VERSION_LABEL: version, POD_LABEL: config.project},
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        scale_metric=scaling.scale_metric,
        scale_target=scaling.scale_target,
        canary_traffic_percent=serving.canary_traffic_percent if canary else None,
        service_account_name=config.cluster.service_account,
    )


def _transformer(config: Config) -> V1beta1TransformerSpec:
    serving, scaling = config.serving, config.serving.autoscaling
    container = V1Container(
        name=CONTAINER_NAME,
        image=config.cluster.image,
        command=["python3", "-m", "kfloop.serving", "transformer"],
        args=["--predictor_protocol", serving.predictor_protocol, *_port_args(serving)],
        env=_env(config, online_store=True),
        ports=[_port(serving, grpc=False)],
        resources=_resources(serving.transformer_resources),
        security_context=container_security_context(),
        volume_mounts=[tmp_mount()],
        **_probes(serving, grpc=False),
    )
    sink = serving.inference_log.sink_url
    return V1beta1TransformerSpec(
        containers=[container],
        labels={POD_LABEL: config.project},
        **_pod(config),
        termination_grace_period_seconds=transformer_grace_seconds(serving),
        # on the transformer: its request has the entity keys, its response the version and `defaulted`
        logger=V1beta1LoggerSpec(mode="all", url=sink) if sink else None,
        timeout=transformer_timeout(serving),  # the grace period covers the log's last flush
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        scale_metric=scaling.scale_metric,
        scale_target=scaling.scale_target,
        service_account_name=config.cluster.service_account,
    )


def build_inference_service(
    config: Config, version: str, storage_uri: str, *, canary: bool = False
) -> V1beta1InferenceService:
    """The InferenceService serving ``version`` (files at ``storage_uri``) under ``training.model_name``.

    ``canary`` sets the predictor's ``canaryTrafficPercent`` from ``serving.canary_traffic_percent`` (when
    configured): the new revision gets that share and the last ready one the rest, until it is promoted.
    """
    name = config.training.model_name
    meta = V1ObjectMeta(
        name=name,
        namespace=config.cluster.namespace,
        labels={MANAGED_BY_LABEL: "kfloop", PROJECT_LABEL: config.project, VERSION_LABEL: version},
        annotations={
            STORAGE_URI_ANNOTATION: storage_uri,
            DEPLOYMENT_MODE_ANNOTATION: DEPLOYMENT_MODES[config.serving.deployment_mode],
        },
    )
    isvc = V1beta1InferenceService(
        api_version=kserve.constants.KSERVE_V1BETA1,
        kind=kserve.constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=meta,
        spec=V1beta1InferenceServiceSpec(
            predictor=_predictor(config, version, storage_uri, canary=canary), transformer=_transformer(config)
        ),
    )
    meta.annotations[SPEC_HASH_ANNOTATION] = spec_hash(inference_service_manifest(isvc))
    return isvc


def spec_hash(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, without the hash annotation, runtime-only fields and the
    predictor's ``canaryTrafficPercent``: equal hashes mean the same image, resources, autoscaling, config
    and version, whether or not the version is still a canary."""
    body = copy.deepcopy(manifest)
    body.pop("status", None)
    meta = body.get("metadata") or {}
    for key in _RUNTIME_METADATA:
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop(SPEC_HASH_ANNOTATION, None)
    ((body.get("spec") or {}).get("predictor") or {}).pop("canaryTrafficPercent", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def inference_service_manifest(isvc: V1beta1InferenceService) -> dict[str, Any]:
    """The object as the API server takes it: camelCase keys, no ``None`` fields."""
    return ApiClient().sanitize_for_serialization(isvc)


def render_yaml(isvc: V1beta1InferenceService) -> str:
    """The manifest as YAML with a header saying it is generated and from which version."""
    version = (isvc.metadata.labels or {}).get(VERSION_LABEL, "?")
    header = f"# GENERATED by kfloop for model version {version}; re-render it instead of editing it.\n"
    return header + yaml.safe_dump(inference_service_manifest(isvc), sort_keys=False, width=120)
