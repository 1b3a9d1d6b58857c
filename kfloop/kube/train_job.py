"""The train step on a cluster with ``training.workers`` > 1: a Kubeflow Training Operator PyTorchJob
(``kubeflow.org/v1``), rendered from the config, submitted by server-side apply, and waited for.

Why PyTorchJob and not TrainJob (``trainer.kubeflow.org/v1alpha1``): PyTorchJob is a v1 API and what the
Training Operator of Kubeflow 1.8 to 1.10 installs; one object says everything (no ClusterTrainingRuntime to
install and name, no JobSet underneath), and it sets exactly the torchrun variables the worker reads.

The job: one Master and ``workers - 1`` Worker replicas of one process each (``nprocPerNode: "1"``); the
operator gives every pod ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Each pod runs the image's
``python3 -m kfloop.components.train`` for the training set the step chose (``kfloop.training.launch``), with
the step's own Secrets as env vars (``kfloop.cluster_env``), ``cluster.resources.train`` (plus one GPU under
``training.device: gpu``), and the restricted Pod Security Standard (``kfloop.kube.security``). Rank 0, the
Master, registers the model; the step then reads it from the registry.

Run policy: a failed pod restarts (``OnFailure``, at most ``BACKOFF_LIMIT`` times: the group re-forms from
scratch); ``activeDeadlineSeconds`` is ``training.job_timeout_minutes``, so the operator ends a job that runs
too long even when the step waiting for it is gone; ``cleanPodPolicy: Running`` deletes pods still running
when the job ends (a Worker whose Master failed) and keeps finished ones for ``kubectl logs``.

The name is the model's plus a digest of the model identity and the pipeline run: a retried step finds the job
its first attempt submitted and waits for it instead of training twice. When that job failed (its pods used up
their restarts: a node lost, a rendezvous timed out), the retry submits the next attempt, ``<name>-a2``,
``-a3`` ..., and leaves the failed job and its pods to the operator's TTL, so their logs can still be read.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfloop.cluster_env import env_vars
from kfloop.config import Config
from kfloop.errors import DeployError, PipelineError
from kfloop.kube.security import (
    POD_LABEL,
    as_manifest,
    container_security_context,
    pod_security_context,
    tmp_mount,
    tmp_volume,
)
from kfloop.training.launch import IMAGE_PYTHON

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
#: ``app.kubernetes.io/component`` of the job's pods: the chart's ``<release>-train-job`` NetworkPolicy lets them
#: reach each other (the rendezvous port and gloo's own ports), under the default deny of every kfloop pod.
COMPONENT = "train-job"
API_VERSION = f"{GROUP}/{VERSION}"
#: The operator requires a container of this name and opens the rendezvous port on it.
CONTAINER = "pytorch"
PORT_NAME, PORT = "pytorchjob-port", 23456
MASTER, WORKER = "Master", "Worker"
#: Restarts of failed pods before the job fails.
BACKOFF_LIMIT = 2
#: Finished jobs (and their kept pods) are deleted by the operator after a day.
TTL_SECONDS = 24 * 3600
#: The extended resource of one NVIDIA GPU (the device plugin's name for it).
GPU_RESOURCE = "nvidia.com/gpu"
#: Most job attempts of one step (its first and every retry's after a failed job): ``<name>``, ``<name>-a2`` ...
MAX_ATTEMPTS = 9
#: Longest job name: its pods and Services are ``<name>-a<n>-worker-<i>``, DNS labels of at most 63 characters.
MAX_NAME = 63 - len("-worker-") - 2 - len(f"-a{MAX_ATTEMPTS}")
#: Where a pod reads its own namespace (every pod with a ServiceAccount token has it).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Seconds before the first read of the job's status; each wait doubles, up to POLL_SECONDS.
FIRST_POLL_SECONDS, POLL_SECONDS = 1.0, 10.0
#: After activeDeadlineSeconds the operator marks the job failed; the step waits this much longer to see it.
DEADLINE_MARGIN = 120.0
#: API answers while waiting that are worth another try (the API server restarting, a proxy timing out).
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


def job_name(config: Config, identity_key: str, pipeline_run: str) -> str:
    """``<model>-train-<digest>``: a DNS-1035 label the operator's pod and Service names still fit in."""
    digest = hashlib.sha256(f"{identity_key}/{pipeline_run}".encode()).hexdigest()[:10]
    suffix = f"-train-{digest}"
    return config.training.model_name[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def job_namespace(config: Config, namespace_file: Path = NAMESPACE_FILE) -> str:
    """The namespace of the pod this runs in (where the pipeline's Secrets are), else the Kubeflow Pipelines
    namespace of the config (``cluster.kfp_namespace``, then ``cluster.namespace``)."""
    try:
        found = namespace_file.read_text().strip()
    except OSError:
        found = ""
    return found or config.cluster.kfp_namespace or config.cluster.namespace


def _env(config: Config) -> list[Any]:
    """Plain settings and each Secret as a ``secretKeyRef``, as the train step has them (never their values)."""
    return env_vars(config, online_store=False)


def _resources(config: Config) -> Any:
    from kubernetes.client import V1ResourceRequirements

    res = config.cluster.step_resources("train")
    limits = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if config.training.device == "gpu":
        limits[GPU_RESOURCE] = "1"
    return V1ResourceRequirements(requests={"cpu": res.cpu_request, "memory": res.memory_request}, limits=limits)


def _template(config: Config, args: list[str], labels: dict[str, str]) -> dict[str, Any]:
    """One replica's pod: the worker command, hardened as every kfloop pod, no API token (it calls no API)."""
    from kubernetes.client import (
        V1Container,
        V1ContainerPort,
        V1LocalObjectReference,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
    )

    container = V1Container(
        name=CONTAINER,
        image=config.cluster.image,
        command=[IMAGE_PYTHON],
        args=args,
        env=_env(config) or None,
        ports=[V1ContainerPort(name=PORT_NAME, container_port=PORT, protocol="TCP")],
        resources=_resources(config),
        security_context=container_security_context(),
        volume_mounts=[tmp_mount()],
    )
    pull = [V1LocalObjectReference(name=name) for name in config.cluster.image_pull_secrets]
    spec = V1PodSpec(
        containers=[container],
        volumes=[tmp_volume()],
        security_context=pod_security_context(config.cluster.run_as_user),
        automount_service_account_token=False,
        image_pull_secrets=pull or None,
    )
    return as_manifest(V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels), spec=spec))


def build_pytorch_job(config: Config, name: str, namespace: str, args: list[str]) -> dict[str, Any]:
    """The PyTorchJob whose ``training.workers`` pods run the worker with ``args`` (``launch.worker_args``)."""
    from kfloop.serving.inference_service import MANAGED_BY_LABEL, PROJECT_LABEL

    labels = {PROJECT_LABEL: config.project, MANAGED_BY_LABEL: "kfloop"}
    pod_labels = labels | {POD_LABEL: config.project, "app.kubernetes.io/component": COMPONENT}
    template = _template(config, args, pod_labels)
    replicas = {MASTER: 1, WORKER: config.training.workers - 1}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": BACKOFF_LIMIT,
                "activeDeadlineSeconds": config.training.job_timeout_minutes * 60,
                "ttlSecondsAfterFinished": TTL_SECONDS,
            },
            "pytorchReplicaSpecs": {
                role: {"replicas": count, "restartPolicy": "OnFailure", "template": template}
                for role, count in replicas.items()
            },
        },
    }


def job_state(job: dict[str, Any]) -> tuple[str, str]:
    """(state, message) from the job's conditions: Succeeded or Failed once finished, else the newest true
    condition (Created, Running, Restarting, Suspended), or Pending before the operator saw the job."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for final in ("Failed", "Succeeded"):
        for cond in conditions:
            if cond.get("type") == final:
                return final, str(cond.get("message") or cond.get("reason") or "")
    if conditions:
        last = conditions[-1]
        return str(last.get("type")), str(last.get("message") or last.get("reason") or "")
    return "Pending", "the Training Operator has not reported on it yet"


def _needs(config: Config) -> str:
    return (
        f"training.workers {config.training.workers} on a cluster needs the Kubeflow Training Operator v1, which "
        "serves kubeflow.org/v1 PyTorchJob, and a step ServiceAccount that may get, create and patch pytorchjobs in "
        "this namespace"
    )


def _logs_hint(name: str, namespace: str) -> str:
    return f"its pods' logs: kubectl logs -n {namespace} {name}-master-0 (and {name}-worker-<i>)"


def submit_and_wait(
    config: Config,
    job: dict[str, Any],
    *,
    api_client: ApiClient | None = None,
    poll_seconds: float | None = None,
    timeout_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Apply ``job`` (a no-op when a retried step applies it again) and wait until it succeeds, reading it after
    1, 2, 4 ... s, then every ``poll_seconds`` (default ``POLL_SECONDS``); returns it as last read. A failed job,
    one still unfinished after ``timeout_seconds`` (default: its deadline plus ``DEADLINE_MARGIN``) or one deleted
    meanwhile is a PipelineError naming it; API faults are DeployErrors."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from kfloop.kube.apply import REQUEST_TIMEOUT, api_message, apply_objects
    from kfloop.kube.connect import connect

    namespace = job["metadata"]["namespace"]
    api = api_client or connect()
    deadline_seconds = job["spec"]["runPolicy"]["activeDeadlineSeconds"]
    limit = timeout_seconds if timeout_seconds is not None else deadline_seconds + DEADLINE_MARGIN
    try:
        job = _attempt(config, job, api, sleep)
        name = job["metadata"]["name"]
        where = f"PyTorchJob {namespace}/{name}"
        try:
            apply_objects([job], namespace=namespace, api_client=api)
        except DeployError as err:
            raise DeployError(f"{where}: {err} ({_needs(config)})") from err
        deadline = time.monotonic() + limit
        most = POLL_SECONDS if poll_seconds is None else poll_seconds
        state, message, wait = "Pending", "", min(FIRST_POLL_SECONDS, most)
        while True:
            try:
                found = CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as err:
                if err.status == 404:
                    raise PipelineError(f"{where} was deleted before it finished (last state {state})") from err
                if err.status not in _TRANSIENT:
                    raise DeployError(f"{where}: the API server refused to read it: {api_message(err)}") from err
            except (HTTPError, OSError):
                pass  # the API server is briefly unreachable: the job goes on, read it again
            else:
                state, message = job_state(found)
                if state == "Succeeded":
                    return found
                if state == "Failed":
                    raise PipelineError(f"{where} failed: {message}; {_logs_hint(name, namespace)}")
            if time.monotonic() >= deadline:
                minutes = config.training.job_timeout_minutes
                raise PipelineError(
                    f"{where} did not finish within {limit:.0f} s (training.job_timeout_minutes {minutes}); last "
                    f"state {state}: {message}; {_logs_hint(name, namespace)}"
                )
            sleep(wait)
            wait = min(wait * 2, most)
    finally:
        if api_client is None:
            api.close()


def _attempt(config: Config, job: dict[str, Any], api: ApiClient, sleep: Callable[[float], None]) -> dict[str, Any]:
    """``job`` under the name of the attempt to wait for. Every attempt's name is read (one may be gone, deleted by
    the operator's TTL, while a later one exists): the newest existing attempt is waited for unless it failed, then
    the one after it is submitted; with none yet, the first."""
    base = job["metadata"]["name"]
    names = [base] + [f"{base}-a{n}" for n in range(2, MAX_ATTEMPTS + 1)]
    newest, state, message = -1, "", ""
    for i, name in enumerate(names):
        found = _read_job(config, api, job["metadata"]["namespace"], name, sleep)
        if found is not None:
            newest, (state, message) = i, job_state(found)
    if newest >= 0 and state == "Failed":
        newest += 1
        if newest == len(names):
            raise PipelineError(
                f"PyTorchJob {job['metadata']['namespace']}/{base}: all {MAX_ATTEMPTS} attempts failed (the last: "
                f"{message}); {_logs_hint(names[-1], job['metadata']['namespace'])}"
            )
    return {**job, "metadata": {**job["metadata"], "name": names[max(newest, 0)]}}


def _read_job(
    config: Config, api: ApiClient, namespace: str, name: str, sleep: Callable[[float], None]
) -> dict[str, Any] | None:
    """The job as stored, None when there is none (or the cluster has no such kind: the apply then says which).
    A busy or briefly unreachable API server is asked again, up to 3 times; then a DeployError, as any refusal."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from kfloop.kube.apply import REQUEST_TIMEOUT, api_message

    where = f"PyTorchJob {namespace}/{name}"
    for tries in range(1, 4):
        try:
            return CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:
                return None
            if err.status not in _TRANSIENT or tries == 3:
                raise DeployError(f"{where}: {api_message(err)} ({_needs(config)})") from err
        except (HTTPError, OSError) as err:
            if tries == 3:
                raise DeployError(f"{where}: the Kubernetes API server is unreachable: {err}") from err
        sleep(FIRST_POLL_SECONDS * tries)
    raise AssertionError("unreachable")


#: The rule the train step's ServiceAccount needs (the Helm chart's deployer Role, or your own).
RBAC_RULE = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "create", "patch"]}

__all__ = [
    "API_VERSION",
    "COMPONENT",
    "KIND",
    "RBAC_RULE",
    "build_pytorch_job",
    "job_name",
    "job_namespace",
    "job_state",
    "submit_and_wait",
]
