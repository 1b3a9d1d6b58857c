"""The training pipeline (KFP v2): ingest → validate (data contract) → quality gate.

Ingest is the first step; later stages append theirs here. The whole config travels as one pipeline
parameter (``config_json``) whose default is the config the pipeline was compiled from, so a run
launched from the Kubeflow UI uses it unless the user overrides it.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature at decoration time.

from collections.abc import Callable

from kfp import dsl, kubernetes

from kfloop.components.ingest import ingest_component
from kfloop.components.validate import gate_component, validate_component
from kfloop.config import Config, Resources, S3StorageConfig, config_to_json

#: Retries for steps that talk to storage over the network (idempotent steps only).
RETRIES = 2


def _step(func: Callable, config: Config) -> Callable:
    """A lightweight component running in the project image, which has kfloop preinstalled."""
    return dsl.component(func=func, base_image=config.cluster.image, install_kfp_package=False)


def _apply_resources(task: dsl.PipelineTask, res: Resources) -> None:
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)


def _apply_storage_secrets(task: dsl.PipelineTask, config: Config) -> None:
    """On a cluster, S3 keys come from Kubernetes Secrets as the env vars the config names."""
    storage = config.storage
    if not isinstance(storage, S3StorageConfig):
        return
    for ref in (storage.access_key, storage.secret_key):
        if ref.secret_name and ref.secret_key:
            kubernetes.use_secret_as_env(task, secret_name=ref.secret_name, secret_key_to_env={ref.secret_key: ref.env})


def pipeline_name(config: Config) -> str:
    return f"{config.project}-training"


def build_training_pipeline(config: Config, *, retries: int = RETRIES) -> Callable:
    """The KFP pipeline function for ``config`` (call it under ``kfp.local`` or compile it).

    ``retries`` is for a cluster's transient faults; local runs pass 0 so a real error fails at once.
    """
    ingest_op = _step(ingest_component, config)
    validate_op = _step(validate_component, config)
    gate_op = _step(gate_component, config)

    @dsl.pipeline(
        name=pipeline_name(config),
        description=f"kfloop training loop for {config.project}",
        pipeline_root=config.cluster.pipeline_root,
    )
    def training(config_json: str = config_to_json(config), source_uri: str = config.source.uri) -> dsl.Dataset:
        ingest = ingest_op(config_json=config_json, source_uri=source_uri).set_display_name("ingest")
        ingest.set_caching_options(False)  # incremental: its result depends on the lake, not its inputs
        if retries:
            ingest.set_retry(retries, backoff_duration="30s", backoff_factor=2)
        _apply_resources(ingest, config.cluster.step_resources("ingest"))
        _apply_storage_secrets(ingest, config)

        validate = validate_op(config_json=config_json, ingest_manifest=ingest.outputs["run_manifest"])
        validate.set_display_name("validate (data contract)")
        validate.set_caching_options(False)  # reads the lake, which ingestion changes in place
        if retries:
            validate.set_retry(retries, backoff_duration="30s", backoff_factor=2)
        _apply_resources(validate, config.cluster.step_resources("validate"))
        _apply_storage_secrets(validate, config)

        gate = gate_op(passed=validate.outputs["passed"], message=validate.outputs["message"])
        gate.set_display_name("quality gate")
        return validate.outputs["clean"]

    return training
