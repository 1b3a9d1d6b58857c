"""The ``cluster`` section: what compiled pipelines and manifests need to run on Kubernetes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kfloop.config._base import Section

_CPU = r"^\d+(\.\d+)?m?$"
_MEMORY = r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"


class Resources(Section):
    """CPU/memory requests and limits of one container (a pipeline step or a serving component), in
    Kubernetes quantity syntax."""

    cpu_request: str = Field("500m", pattern=_CPU, description="CPU request, e.g. 500m or 2.")
    cpu_limit: str = Field("2", pattern=_CPU, description="CPU limit.")
    memory_request: str = Field("1Gi", pattern=_MEMORY, description="Memory request, e.g. 512Mi or 1Gi.")
    memory_limit: str = Field("4Gi", pattern=_MEMORY, description="Memory limit.")


#: Pipeline steps that take resource settings (a dict, so later steps add a name here only); ``drift_check`` is
#: the scheduled drift check's container (the scheduled materialization takes ``materialize``'s).
StepName = Literal[
    "ingest", "validate", "features", "materialize", "training_set", "train", "evaluate", "deploy", "drift_check"
]


class ClusterConfig(Section):
    """Kubeflow Pipelines settings; the image has kfloop preinstalled (no pip installs at run time)."""

    image: str = Field(
        "ghcr.io/kfloop/kfloop:0.1.0",
        min_length=1,
        description="Image with kfloop installed: every pipeline step and serving component runs it. "
        "The repository's Dockerfile builds it: set the reference you built and pushed.",
    )
    namespace: str = Field(
        "kubeflow",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the InferenceService the deploy step manages.",
    )
    kfp_host: str | None = Field(
        None,
        description="Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888: where a drift-triggered "
        "retrain (monitoring.retrain.run_on: cluster) starts its run.",
    )
    experiment: str = Field(
        "kfloop", min_length=1, description="Kubeflow Pipelines experiment that drift-triggered retrains run in."
    )
    pipeline_root: str | None = Field(None, description="Artifact root, e.g. s3://bucket/pipeline-root.")
    service_account: str | None = Field(
        None,
        description="ServiceAccount of the InferenceService components; its Secret gives KServe's storage "
        "initializer the S3 keys to download the model.",
    )
    resources: dict[StepName, Resources] = Field(
        default_factory=dict, description="CPU/memory per step; a step not named gets the defaults."
    )

    def step_resources(self, step: StepName) -> Resources:
        return self.resources.get(step, Resources())
