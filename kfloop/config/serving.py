"""The ``serving`` section: the KServe endpoint (local server and cluster InferenceService).

The endpoint's model name is ``training.model_name`` (one name in the registry, the URL paths and the
InferenceService); inputs are the source's entity keys plus ``features.request_features``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kfloop.config._base import Section
from kfloop.config.cluster import Resources


class InferenceLogConfig(Section):
    """Every request's features, prediction, model version and time, buffered off the request path and
    written as Parquet batches under ``<workspace>/<prefix>/``."""

    enabled: bool = Field(True, description="false: nothing is logged.")
    prefix: str = Field("inference-log", pattern=r"^[a-z0-9][a-z0-9_./-]*$", description="Workspace folder of the log.")
    flush_rows: int = Field(5000, ge=1, description="Write a Parquet file once this many rows are buffered.")
    flush_seconds: float = Field(10.0, gt=0, description="...or once the oldest buffered row is this old.")
    max_buffer_rows: int = Field(
        200_000, ge=1, description="Bound on buffered rows; beyond it rows are dropped and counted (never blocks)."
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=540,
        description="On SIGTERM / Ctrl-C the last flush gets this long; rows still unwritten then (storage down or "
        "hung) are counted as dropped and logged as lost. The pod's grace period covers it: beyond 240 s the "
        "transformer's Knative revision timeout (its grace period) is raised to this + 60 s (Knative's maximum "
        "is 600 s); in RawDeployment mode the grace period is Kubernetes' 30 s.",
    )
    sink_url: str | None = Field(
        None, description="Cluster: where KServe's request logger sends CloudEvents (the InferenceService logger)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> InferenceLogConfig:
        if self.flush_rows > self.max_buffer_rows:
            raise ValueError("flush_rows must not exceed max_buffer_rows")
        return self


class Autoscaling(Section):
    """KServe (Knative) autoscaling of each component."""

    min_replicas: int = Field(1, ge=0, description="0 lets Knative scale to zero.")
    max_replicas: int = Field(3, ge=1, description="Upper bound of replicas per component.")
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = Field(
        "cpu",
        description="The metric KServe scales on: cpu or memory (utilization %, a HorizontalPodAutoscaler in raw "
        "mode), or concurrency or rps (Knative's autoscaler: serving.deployment_mode knative).",
    )
    scale_target: int = Field(80, ge=1, description="Target value of scale_metric per replica.")

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        return self


class ServingConfig(Section):
    """How the champion is served: ports, request limits, unknown entities, the inference log, and the
    cluster's InferenceService (autoscaling, canary, resources)."""

    http_port: int = Field(8080, ge=1, le=65535, description="REST port (V1 and V2, metrics, health).")
    grpc_port: int = Field(8081, ge=1, le=65535, description="V2 gRPC port.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="`kfloop serve`: server processes sharing the ports (SO_REUSEPORT; each a whole server with its "
        "own champion watch and inference-log files; /metrics adds them up). More than the cores gains nothing; a "
        "client's connection (a gRPC channel) stays on one worker. The cluster scales replicas instead.",
    )
    unknown_entity: Literal["default", "reject"] = Field(
        "default",
        description="An entity missing from the online store: 'default' scores with default feature values and "
        "flags the row in the response; 'reject' answers 404 naming the entity.",
    )
    unknown_category: Literal["reject", "flag"] = Field(
        "reject",
        description="A request value outside the data contract's `allowed` values: 'reject' answers 400 naming "
        "the field, row and allowed values; 'flag' scores the row and names the failed check in its `violations`.",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger REST bodies get 413.")
    max_batch_rows: int = Field(10_000, ge=1, description="Rows per request; more get 413.")
    access_log: bool = Field(
        False, description="Log every request (uvicorn access log and KServe's timing lines); off saves CPU."
    )
    reload_seconds: float = Field(2.0, gt=0, description="How often the local server checks the champion.")
    reload_max_seconds: float = Field(
        60.0,
        gt=0,
        description="After a transient registry error the champion check waits twice as long each time, up to this.",
    )
    lookup_timeout_seconds: float = Field(
        1.0, gt=0, description="An online-store read slower than this is a 503 (a hung store must not hang serving)."
    )
    store_check_seconds: float = Field(1.0, gt=0, description="How often readiness probes the online store.")
    predictor_protocol: Literal["v1", "v2", "grpc-v2"] = Field(
        "v2", description="Cluster: how the transformer calls the predictor."
    )
    deployment_mode: Literal["raw", "knative"] = Field(
        "raw",
        description="Cluster: KServe's standard mode (raw: a Deployment, Service and HorizontalPodAutoscaler per "
        "component; no Knative needed) or Knative mode (scale to zero, concurrency/rps autoscaling, revisions).",
    )
    autoscaling: Autoscaling = Field(Autoscaling(), description="Cluster: replicas and the scaling metric.")
    canary_traffic_percent: int | None = Field(
        None, ge=0, le=100, description="Traffic share of a newly deployed version until it is promoted fully."
    )
    transformer_resources: Resources = Field(
        Resources(cpu_request="500m", cpu_limit="1", memory_request="512Mi", memory_limit="1Gi"),
        description="Cluster: CPU/memory of the transformer container.",
    )
    predictor_resources: Resources = Field(
        Resources(cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi"),
        description="Cluster: CPU/memory of the predictor container.",
    )
    inference_log: InferenceLogConfig = Field(
        InferenceLogConfig(), description="What is logged per scored row, and when it is written."
    )

    @model_validator(mode="after")
    def _ports(self) -> ServingConfig:
        if self.http_port == self.grpc_port:
            raise ValueError(f"http_port and grpc_port are both {self.http_port}")
        return self

    @model_validator(mode="after")
    def _raw_scaling(self) -> ServingConfig:
        """Raw mode scales with a HorizontalPodAutoscaler: on resource utilization, never to zero."""
        scaling = self.autoscaling
        if self.deployment_mode == "raw" and scaling.scale_metric in ("concurrency", "rps"):
            raise ValueError(
                f"autoscaling.scale_metric {scaling.scale_metric} needs Knative: set deployment_mode: knative, or "
                "scale on cpu or memory in raw mode"
            )
        if self.deployment_mode == "raw" and scaling.min_replicas < 1:
            raise ValueError("autoscaling.min_replicas 0 (scale to zero) needs deployment_mode: knative")
        if self.deployment_mode == "raw" and self.canary_traffic_percent is not None:
            raise ValueError(
                "canary_traffic_percent needs deployment_mode: knative (KServe rolls out canaries with Knative "
                "revisions only; in raw mode a new version replaces the old one at once)"
            )
        return self
