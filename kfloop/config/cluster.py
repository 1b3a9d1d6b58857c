"""The ``cluster`` section: what compiled pipelines and manifests need to run on Kubernetes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kfloop.config._base import Section

#: An image reference pinned to a tag or a digest: an image without either pulls ``latest``.
IMAGE_PINNED = (
    r"^[a-z0-9][^@\s]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$|^[a-z0-9][^@\s]*@sha256:[a-f0-9]{64}$"
)
_CPU = r"^\d+(\.\d+)?m?$"
_MEMORY = r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"


def image_pinned(image: str) -> bool:
    """A digest, or a tag other than ``latest`` (an image without either pulls ``latest``)."""
    if "@" in image:
        return True
    _, colon, tag = image.rpartition("/")[2].partition(":")
    return bool(colon and tag and tag != "latest")


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
    "ingest",
    "validate",
    "features",
    "materialize",
    "training_set",
    "train",
    "evaluate",
    "deploy",
    "drift_check",
    "report",
]


#: Where Kubeflow projects the ServiceAccount token the Pipelines API accepts (kfp's own default path too).
KFP_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


class KfpAuth(Section):
    """How ``kfloop submit`` and cluster retrains authenticate to the Kubeflow Pipelines API."""

    mode: Literal["none", "service_account_token", "kubeconfig"] = Field(
        "none",
        description="none: no credentials (single-user Kubeflow Pipelines, or a `kubectl port-forward`); "
        "service_account_token: the bearer token in token_path, read afresh for every request (in a pod: the "
        "projected token Kubeflow's PodDefault mounts); kubeconfig: the bearer token of the kubeconfig context "
        "(kube_context; $KUBECONFIG or ~/.kube/config), e.g. an OIDC token the Kubeflow ingress accepts.",
    )
    token_path: str = Field(KFP_TOKEN_PATH, min_length=1, description="The token file of mode service_account_token.")
    kube_context: str | None = Field(
        None, description="The kubeconfig context of mode kubeconfig; null: the current context."
    )


class ClusterConfig(Section):
    """Kubeflow Pipelines settings; the image has kfloop preinstalled (no pip installs at run time)."""

    image: str = Field(
        "ghcr.io/kfloop/kfloop:0.1.0",
        pattern=IMAGE_PINNED,
        json_schema_extra={"not": {"pattern": ":latest$"}},
        description="Image with kfloop installed: every pipeline step and serving component runs it. "
        "The repository's Dockerfile builds it: set the reference you built and pushed, with a version tag or "
        "a digest (never latest: every pod must run the same image).",
    )
    namespace: str = Field(
        "kubeflow",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the InferenceService the deploy step manages.",
    )
    kfp_host: str | None = Field(
        None,
        description="Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888 in the cluster or "
        "https://kubeflow.example.com/pipeline through the ingress: where `kfloop submit` uploads and runs the "
        "pipeline and a drift-triggered retrain (monitoring.retrain.run_on: cluster) starts its run.",
    )
    kfp_ca_cert: str | None = Field(
        None,
        description="CA bundle (PEM file) that signs cluster.kfp_host's TLS certificate, e.g. a Kubeflow ingress's "
        "own CA; null: the system's CAs.",
    )
    kfp_ui_host: str | None = Field(
        None, description="Base URL of the Kubeflow Pipelines UI for the links `kfloop submit` prints; null: kfp_host."
    )
    kfp_namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Multi-user Kubeflow: the profile namespace the pipeline, its experiment and runs belong to "
        "(kfp.Client's namespace); null: single-user Kubeflow Pipelines (shared pipelines).",
    )
    kfp_auth: KfpAuth = Field(KfpAuth(), description="Credentials for the Kubeflow Pipelines API.")
    experiment: str = Field(
        "kfloop",
        min_length=1,
        description="Kubeflow Pipelines experiment that `kfloop submit` and drift-triggered retrains run in.",
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
    image_pull_secrets: tuple[str, ...] = Field(
        (),
        description="Secrets (type dockerconfigjson) every kfloop pod pulls cluster.image with: the pipeline steps, "
        "the InferenceService, the scheduled jobs and the Helm chart's pods. Empty: a public image.",
    )
    run_as_user: int = Field(
        10001,
        ge=1,
        description="Non-root UID (and GID, fsGroup) every kfloop pod runs as: the image's own user (the "
        "restricted Pod Security Standard).",
    )

    @field_validator("image", mode="before")
    @classmethod
    def _pinned(cls, image: object) -> object:
        if isinstance(image, str) and not image_pinned(image):
            raise ValueError(
                f"{image!r} is not pinned (no tag, or latest): every step, server and schedule must run the same "
                "image; set a version tag or a digest"
            )
        return image

    def step_resources(self, step: StepName) -> Resources:
        return self.resources.get(step, Resources())
