"""The ``cluster`` section: what compiled pipelines and manifests need to run on Kubernetes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kfloop.config._base import Section


class Resources(Section):
    """CPU/memory requests and limits of one pipeline step, in Kubernetes quantity syntax."""

    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"


#: Pipeline steps that take resource settings (a dict, so later steps add a name here only).
StepName = Literal["ingest", "validate"]


class ClusterConfig(Section):
    """Kubeflow Pipelines settings; the image has kfloop preinstalled (no pip installs at run time)."""

    image: str = Field("ghcr.io/kfloop/kfloop:0.1.0", min_length=1, description="Project image for every step.")
    namespace: str = Field("kubeflow", description="Namespace of runs and deployments.")
    kfp_host: str | None = Field(None, description="KFP API endpoint for `kfloop submit`.")
    pipeline_root: str | None = Field(None, description="Artifact root, e.g. s3://bucket/pipeline-root.")
    service_account: str | None = None
    resources: dict[StepName, Resources] = Field(
        default_factory=dict, description="CPU/memory per step; a step not named gets the defaults."
    )

    def step_resources(self, step: StepName) -> Resources:
        return self.resources.get(step, Resources())
