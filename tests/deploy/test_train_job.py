"""The train step on a cluster with ``training.workers`` > 1: the PyTorchJob it renders (valid against the
Training Operator's vendored CRD, its pods against Kubernetes' strict schemas, the restricted Pod Security
Standard and the project's hardening bar), and the whole step against a cluster that runs it.

No cluster, Training Operator or kubelet can run here, so :class:`FakeKubeApi` (a real HTTP server speaking the
API paths the kubernetes client uses) stands in for the API server, and :class:`FakeTrainingOperator` for the
operator and the kubelet: for each PyTorchJob it starts the pods the job describes as local processes, with the
container's command and env (Secrets resolved from a table, as the kubelet does) plus the variables the operator
v1.9 sets (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; pkg/controller.v1/pytorch/envvar.go), then
reports ``Succeeded`` or ``Failed`` in the job's conditions. The workspace is real S3 (moto), so the pods reach it
only through the credentials their env names.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.train import training_set
from benchmarks.train_ddp import time_splits, write_training_set
from kfloop.components.train import train_and_register, training_identity
from kfloop.config import Config, config_to_json, load_config, parse_config
from kfloop.errors import DeployError, PipelineError
from kfloop.kube import train_job
from kfloop.kube.chart import render_objects
from kfloop.registry import ModelRegistry
from kfloop.storage import S3Storage
from kfloop.training.launch import worker_args
from tests.conftest import REPO, S3_CREDS, free_port
from tests.deploy import checks
from tests.deploy.kube_fake import DEFAULT_KINDS, FakeKubeApi, Kind

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
KINDS = {**DEFAULT_KINDS, train_job.API_VERSION: (Kind(train_job.KIND, train_job.PLURAL),)}
#: The Secret the cluster example names for the S3 keys, as the cluster holds it.
SECRETS = {("kfloop-s3", "accesskey"): S3_CREDS.access_key, ("kfloop-s3", "secretkey"): S3_CREDS.secret_key}
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def cluster_config(**training: Any) -> Config:
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["training"].update({"workers": 3, **training})
    return parse_config(data, "cluster test config")


def replica_pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the operator makes of the job (``<job>-master-0``, ``<job>-worker-<i>``), as Pod objects."""
    name = job["metadata"]["name"]
    out = []
    for role, spec in job["spec"]["pytorchReplicaSpecs"].items():
        template = spec["template"]
        for i in range(spec["replicas"]):
            meta = {"name": f"{name}-{role.lower()}-{i}", "namespace": job["metadata"]["namespace"]}
            spec_ = {**template["spec"], "restartPolicy": spec["restartPolicy"]}
            out.append({"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, **template["metadata"]}, "spec": spec_})
    return out


# --- rendering --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_the_job_is_valid_for_the_operator_and_its_pods_are_hardened(device: str) -> None:
    config = cluster_config(device=device)
    args = worker_args(config_to_json(config), "20260101T000000Z-abc123", "run-7")
    job = train_job.build_pytorch_job(config, "fraud-detector-train-0123456789", "kubeflow", args)
    checks.validate_crd(job)  # against kubeflow.org_pytorchjobs.v1.json (Training Operator v1.9.0)
    assert checks.validate_core([job]) == {
        "PyTorchJob/fraud-detector-train-0123456789": "CRD schema kubeflow.org_pytorchjobs.v1.json"
    }
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert {role: s["replicas"] for role, s in specs.items()} == {"Master": 1, "Worker": 2}  # workers 3
    assert job["spec"]["nprocPerNode"] == "1"  # one process per pod: WORLD_SIZE = pods
    policy = job["spec"]["runPolicy"]
    assert policy["activeDeadlineSeconds"] == config.training.job_timeout_minutes * 60
    assert policy["cleanPodPolicy"] == "Running" and policy["backoffLimit"] == train_job.BACKOFF_LIMIT
    pods = replica_pods(job)
    assert [p["metadata"]["name"] for p in pods] == [
        "fraud-detector-train-0123456789-master-0",
        "fraud-detector-train-0123456789-worker-0",
        "fraud-detector-train-0123456789-worker-1",
    ]
    checks.validate_core(pods)  # Kubernetes' strict Pod schema: no unknown or misplaced field
    for pod in pods:
        checks.assert_pss_restricted(pod)
        checks.assert_hardened(pod)
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == config.cluster.image
        assert container["command"] == ["python3"] and container["args"] == args
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"}]
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "kfloop-s3", "key": "accesskey"}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "kfloop-s3", "key": "secretkey"}
        assert "REDIS_CONNECTION_STRING" not in env  # training never opens the online store
        train = config.cluster.step_resources("train")
        gpu = {"nvidia.com/gpu": "1"} if device == "gpu" else {}
        assert container["resources"] == {
            "requests": {"cpu": train.cpu_request, "memory": train.memory_request},
            "limits": {"cpu": train.cpu_limit, "memory": train.memory_limit, **gpu},
        }
        assert pod["spec"]["automountServiceAccountToken"] is False  # the workers call no API


def test_the_name_fits_the_operators_pod_and_service_names() -> None:
    longest = cluster_config(model_name="m" + "-x" * 25)  # 51 characters, the longest model name
    names = {train_job.job_name(c, key, run) for c in (longest, cluster_config()) for key in "ab" for run in ("", "r")}
    assert len(names) == 8  # another identity or pipeline run, another job
    for name in names:
        assert DNS_1035.fullmatch(name) and len(f"{name}-worker-62") <= 63, name
    assert train_job.job_name(cluster_config(), "a", "r") == train_job.job_name(cluster_config(), "a", "r")


def test_job_state_reads_the_operators_conditions() -> None:
    def job(*conds: tuple[str, str, str]) -> dict:
        return {"status": {"conditions": [{"type": t, "status": s, "message": m} for t, s, m in conds]}}

    assert train_job.job_state({})[0] == "Pending"
    assert train_job.job_state(job(("Created", "True", "created"), ("Running", "True", "running"))) == (
        "Running",
        "running",
    )
    done = job(
        ("Created", "True", ""),
        ("Running", "False", ""),
        ("Succeeded", "True", "PyTorchJob x is successfully completed."),
    )
    assert train_job.job_state(done) == ("Succeeded", "PyTorchJob x is successfully completed.")
    failed = job(
        ("Running", "False", ""), ("Failed", "True", "PyTorchJob x is failed because 1 Master replica(s) failed.")
    )
    assert train_job.job_state(failed)[0] == "Failed"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_charts_pipeline_runner_may_submit_the_job_when_training_needs_one(workers: int) -> None:
    objects = render_objects(cluster_config(workers=workers))
    (role,) = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"].endswith("-deployer")]
    assert (train_job.RBAC_RULE in role["rules"]) is (workers > 1)  # least privilege: only when it is used
    # the job's pods are kfloop pods (the default deny selects them) and one policy lets them reach each other
    pods = train_job.build_pytorch_job(cluster_config(workers=workers), "j", "kubeflow", ["-m", "x"])["spec"]
    labels = pods["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    deny = next(spec for name, spec in policies.items() if name.endswith("-default-deny"))
    assert deny["podSelector"]["matchLabels"].items() <= labels.items()
    peers = [spec for name, spec in policies.items() if name.endswith("-train-job")]
    assert len(peers) == (workers > 1)
    for spec in peers:
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
        (rule,) = spec["ingress"]
        assert "ports" not in rule and rule["from"] == [{"podSelector": spec["podSelector"]}]  # every port, peers only


# --- against a cluster ------------------------------------------------------------------------------------------


class FakeTrainingOperator:
    """The Training Operator and the kubelet, for the PyTorchJobs applied to ``kube`` (see the module docstring).
    ``outcome`` "run" starts the pods; "fail" reports a failed Master at once; "succeed" reports success at once
    (no pods: for tests of the step's bookkeeping); "hang" never reports."""

    def __init__(self, kube: FakeKubeApi, outcome: str = "run") -> None:
        self.kube, self.outcome = kube, outcome
        self.pods: list[dict[str, str]] = []  # the operator-set variables of each pod started
        self.handled: set[str] = set()
        self.logs: list[str] = []
        self.ran_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> FakeTrainingOperator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _jobs(self) -> list[dict]:
        with self.kube._lock:
            return [copy.deepcopy(s.obj) for k, s in self.kube.objects.items() if k[1] == train_job.PLURAL]

    def _report(self, job: dict, *conditions: tuple[str, str]) -> None:
        key = (train_job.API_VERSION, train_job.PLURAL, job["metadata"]["namespace"], job["metadata"]["name"])
        status = {"conditions": [{"type": t, "status": "True", "reason": t, "message": m} for t, m in conditions]}
        with self.kube._lock:  # the status subresource, which the fake API does not model: set in its store
            self.kube.objects[key].obj["status"] = status

    def _loop(self) -> None:
        while not self._stop.is_set():
            for job in self._jobs():
                name = job["metadata"]["name"]
                if name in self.handled or job.get("status") or self.outcome == "hang":  # reported on before
                    continue
                self.handled.add(name)
                self._report(job, ("Created", f"PyTorchJob {name} is created."))
                if self.outcome == "fail":
                    self._report(job, ("Failed", f"PyTorchJob {name} is failed because 1 Master replica(s) failed."))
                    continue
                if self.outcome == "succeed":
                    self._report(job, ("Succeeded", f"PyTorchJob {name} is successfully completed."))
                    continue
                self._report(job, ("Running", f"PyTorchJob {name} is running."))
                ok = self._run_pods(job)
                last = ("Succeeded", f"PyTorchJob {name} is successfully completed.")
                self._report(
                    job, last if ok else ("Failed", f"PyTorchJob {name} is failed: a replica exited non-zero.")
                )
            time.sleep(0.05)

    def _run_pods(self, job: dict) -> bool:
        specs = job["spec"]["pytorchReplicaSpecs"]
        world = sum(s["replicas"] for s in specs.values())
        port = str(free_port())
        procs = []
        for role, rank in [("Master", 0)] + [("Worker", i + 1) for i in range(specs["Worker"]["replicas"])]:
            (container,) = specs[role]["template"]["spec"]["containers"]
            assert container["command"] == ["python3"]  # the image's interpreter: this one, here
            env = {e["name"]: _value(e) for e in container["env"]}
            operator = {"WORLD_SIZE": str(world), "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            self.pods.append(operator)
            base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # keys only from the Secret
            procs.append(
                subprocess.Popen(
                    [sys.executable, *container["args"]],
                    env={**base, **env, **operator, "PYTHONUNBUFFERED": "1"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        started = time.monotonic()
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        self.logs, self.ran_seconds = outputs, time.monotonic() - started
        return all(p.returncode == 0 for p in procs)


def _value(var: dict[str, Any]) -> str:
    """An env var's value as the kubelet gives it: its own, or its Secret's key."""
    if "value" in var:
        return var["value"]
    ref = var["valueFrom"]["secretKeyRef"]
    return SECRETS[ref["name"], ref["key"]]


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeApi]:
    """The fake API server with the PyTorchJob CRD, as the kubeconfig the step connects with."""
    with FakeKubeApi(KINDS) as fake:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(fake.kubeconfig()))
        monkeypatch.setenv("KUBECONFIG", str(path))
        yield fake


def s3_config(moto_endpoint: str, storage: S3Storage, **training: Any) -> Config:
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["storage"] |= {"endpoint": moto_endpoint, "bucket": storage.bucket, "prefix": "ws", "secure": False}
    data["training"].update(training)
    return parse_config(data, "cluster test config")


def test_the_step_runs_a_pytorchjob_and_returns_what_its_master_registered(
    kube: FakeKubeApi, moto_endpoint: str, s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_job, "POLL_SECONDS", 1.0)  # the step's reads of the job: at most 1 s apart here
    config = s3_config(moto_endpoint, s3_storage, workers=2, epochs=3, job_timeout_minutes=3)
    splits = time_splits(training_set(config, 4000, 11), config.source.timestamp_column)
    manifest = write_training_set(config, s3_storage, splits, "cluster-set")
    in_a_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}  # what Kubernetes sets in every pod (only read, never called)
    started = time.monotonic()
    with FakeTrainingOperator(kube) as operator:
        card = train_and_register(config, s3_storage, pipeline_run="run-9", environ=in_a_pod)
    print(f"step {time.monotonic() - started:.1f} s, of which the pods ran {operator.ran_seconds:.1f} s")
    assert operator.pods == [
        {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": operator.pods[0]["MASTER_PORT"]},
        {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": operator.pods[0]["MASTER_PORT"]},
    ]
    name = train_job.job_name(config, training_identity(config, manifest)["key"], "run-9")
    job = kube.get(train_job.API_VERSION, train_job.KIND, name, "kubeflow")
    assert job is not None and job["status"]["conditions"][-1]["type"] == "Succeeded"
    assert job["spec"] == train_job.build_pytorch_job(config, name, "kubeflow", worker_args(
        config_to_json(config), "cluster-set", "run-9"))["spec"]  # fmt: skip
    versions = ModelRegistry(s3_storage, config.training.model_name).list()
    assert [v.version for v in versions] == [card["version"]]  # the Master registered, the Worker did not
    assert card["distributed"] == {"processes": 2, "device": "cpu", "backend": "gloo"}
    assert card["pipeline_run"] == "run-9" and card["training_set"]["run_id"] == "cluster-set"
    assert card["identity"]["key"] == training_identity(config, manifest)["key"]

    requests = len(kube.requests)  # a retried step: the model is registered under its identity, nothing submitted
    again = train_and_register(config, s3_storage, pipeline_run="run-9", environ=in_a_pod)
    assert again["reused"] and again["version"] == card["version"] and len(kube.requests) == requests


def _job(config: Config) -> dict:
    return train_job.build_pytorch_job(config, "fraud-detector-train-feed", "kubeflow", ["-m", "x"])


def test_a_failed_job_fails_the_step_naming_it_and_its_logs(kube: FakeKubeApi) -> None:
    with FakeTrainingOperator(kube, "fail"), pytest.raises(PipelineError) as err:
        train_job.submit_and_wait(cluster_config(), _job(cluster_config()), poll_seconds=0.2)
    assert str(err.value) == (
        "PyTorchJob kubeflow/fraud-detector-train-feed failed: PyTorchJob fraud-detector-train-feed is failed because "
        "1 Master replica(s) failed.; its pods' logs: kubectl logs -n kubeflow fraud-detector-train-feed-master-0 "
        "(and fraud-detector-train-feed-worker-<i>)"
    )


def test_a_retried_step_submits_the_next_attempt_and_keeps_the_failed_job(kube: FakeKubeApi) -> None:
    """A kfp retry of the step after its job failed trains again (the job's name is fixed per step, so applying
    it again would only read the same failure); the failed job stays for its logs. A running or finished attempt
    is waited for, not submitted again."""
    config = cluster_config()
    with FakeTrainingOperator(kube, "fail"), pytest.raises(PipelineError, match="failed because"):
        train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    with FakeTrainingOperator(kube, "fail"), pytest.raises(PipelineError, match=r"feed-a2 failed: "):
        train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    with FakeTrainingOperator(kube, "succeed"):
        done = train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    assert done["metadata"]["name"] == "fraud-detector-train-feed-a3"
    assert done["spec"] == _job(config)["spec"]
    base = "fraud-detector-train-feed"
    states = [train_job.job_state(kube.get(train_job.API_VERSION, train_job.KIND, n, "kubeflow") or {})[0]
              for n in (base, f"{base}-a2", f"{base}-a3")]  # fmt: skip
    assert states == ["Failed", "Failed", "Succeeded"]  # the failed attempts are kept, for their pods' logs
    patches = len(kube.patches)
    with FakeTrainingOperator(kube, "succeed"):  # one more retry: the succeeded attempt is read, not resubmitted
        again = train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    assert again["metadata"]["name"] == "fraud-detector-train-feed-a3" and len(kube.patches) == patches + 1
    assert train_job.job_state(again)[0] == "Succeeded"


def test_a_job_that_does_not_finish_in_time_fails_the_step(kube: FakeKubeApi) -> None:
    started = time.monotonic()
    with FakeTrainingOperator(kube, "hang"), pytest.raises(PipelineError) as err:
        train_job.submit_and_wait(cluster_config(), _job(cluster_config()), poll_seconds=0.2, timeout_seconds=1.0)
    assert time.monotonic() - started < 10
    assert "PyTorchJob kubeflow/fraud-detector-train-feed did not finish within 1 s" in str(err.value)
    assert "last state Pending: the Training Operator has not reported on it yet" in str(err.value)


def test_a_cluster_without_the_operator_or_the_right_is_a_clear_error(kube: FakeKubeApi) -> None:
    config = cluster_config()
    with FakeKubeApi() as bare, pytest.raises(DeployError) as err:  # no kubeflow.org/v1: no Training Operator
        train_job.submit_and_wait(config, _job(config), api_client=bare.api_client(), timeout_seconds=1)
    assert "PyTorchJob (kubeflow.org/v1): the cluster has no CRD for it" in str(err.value)
    assert "needs the Kubeflow Training Operator v1" in str(err.value)
    denied = 'pytorchjobs.kubeflow.org "fraud-detector-train-feed" is forbidden: User "system:serviceaccount:kubeflow:pipeline-runner" cannot patch resource "pytorchjobs"'  # noqa: E501
    kube.reject("PyTorchJob", "fraud-detector-train-feed", 403, "Forbidden", denied)
    with pytest.raises(DeployError) as err:
        train_job.submit_and_wait(config, _job(config), timeout_seconds=1)
    assert denied in str(err.value) and "may get, create and patch pytorchjobs" in str(err.value)


def test_a_retry_finds_the_newest_attempt_even_when_an_older_one_is_gone(kube: FakeKubeApi) -> None:
    """The operator deletes finished jobs after their TTL: the first attempt (failed) may be gone while the second
    still runs; a retry then waits for the second, never submits the first name again."""
    config = cluster_config()
    with FakeTrainingOperator(kube, "fail"), pytest.raises(PipelineError):
        train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    with FakeTrainingOperator(kube, "hang"), pytest.raises(PipelineError, match="feed-a2 did not finish"):
        train_job.submit_and_wait(config, _job(config), poll_seconds=0.2, timeout_seconds=0.5)
    with kube._lock:  # the TTL controller deleted the failed first attempt
        del kube.objects[(train_job.API_VERSION, train_job.PLURAL, "kubeflow", "fraud-detector-train-feed")]
    with FakeTrainingOperator(kube, "succeed"):  # reports on -a2, which it has not reported on yet
        done = train_job.submit_and_wait(config, _job(config), poll_seconds=0.2)
    assert done["metadata"]["name"] == "fraud-detector-train-feed-a2"
    assert kube.get(train_job.API_VERSION, train_job.KIND, "fraud-detector-train-feed", "kubeflow") is None


def test_an_unreachable_api_server_is_a_deploy_error_after_retries() -> None:
    config = cluster_config()
    with FakeKubeApi(KINDS) as gone:
        client = gone.api_client()
    waits: list[float] = []
    with pytest.raises(DeployError, match="the Kubernetes API server is unreachable"):
        train_job.submit_and_wait(config, _job(config), api_client=client, sleep=waits.append, timeout_seconds=1)
    assert waits == [1.0, 2.0]  # asked three times
