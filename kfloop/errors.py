"""Every error kfloop raises on purpose, under one root, and the one table that says how each is answered.

The CLI prints ``str(error)`` on one line and exits with the class's exit code; the servers answer its HTTP
status (REST) or gRPC status. All three come from :data:`STATUSES`, looked up along the class's MRO, so a
subclass answers like its parent unless the table names it. gRPC statuses are ``grpc.StatusCode`` names
kept as strings, so this module imports without grpc (the CLI and the stage cores need it, not grpc).
"""

from __future__ import annotations

from typing import NamedTuple


class Status(NamedTuple):
    """How one error class is answered: HTTP status, ``grpc.StatusCode`` name and CLI exit code."""

    http: int
    grpc: str
    exit_code: int


class KfloopError(Exception):
    """Any other failure kfloop reports on purpose (the root of every project error); statuses from :data:`STATUSES`."""

    @property
    def exit_code(self) -> int:
        return status_of(self).exit_code

    @property
    def http_status(self) -> int:
        return status_of(self).http

    @property
    def grpc_status(self) -> str:
        return status_of(self).grpc


# --- config, sources, gates -----------------------------------------------------------------------
class ConfigError(KfloopError):
    """The config file is missing, unreadable or invalid (message names the key path)."""


class ExpressionError(ConfigError):
    """A derived column's expression does not parse, names an unknown column, or mixes types (found when the
    config loads; the message names the key)."""


class PermissionDenied(KfloopError):  # noqa: N818 (the name the CLI and the erasure code use)
    """The configured roles (``governance.roles``) do not allow this actor this action (the message names both
    and the roles held); the refusal is in the audit trail."""


class SourceError(KfloopError):
    """A source file cannot be fetched or parsed at all (message names the file and the reason)."""


class EmptyColumnError(SourceError):
    """A drift test has no non-null value on one side: Evidently refuses to compute drift for such a column too."""


class GateFailedError(KfloopError):
    """A quality gate stopped the loop (message names each failed check, its count and examples)."""


class SchemaChangeError(GateFailedError):
    """Incoming data breaks the contract's schema (message lists every difference by column name)."""


# --- storage and the lease ------------------------------------------------------------------------
class StorageError(KfloopError):
    """Workspace storage (local directory or S3) or the online store failed or holds something unexpected.
    Usually transient (retrying later is the fix), hence 503 / UNAVAILABLE."""


class LeaseBusyError(StorageError):
    """Another run holds the lease on a piece of shared state (message names it, the holder and since when)."""


class LeaseLostError(StorageError):
    """A lease this run held was taken over (it looked stale): stop before committing anything."""


# --- pipelines, registry, deploy ------------------------------------------------------------------
class PipelineError(KfloopError):
    """A pipeline run or compilation failed (message names the failing task)."""


class ModelNotFoundError(KfloopError):
    """No such model or version in the registry."""


class CorruptModelError(KfloopError):
    """A model file is missing or its checksum does not match the card."""


class DeployError(KfloopError):
    """The Kubernetes API is unreachable or refused an apply (the message names the object and the namespace,
    or each kind the cluster does not serve and what to install for it)."""


# --- serving: requests ----------------------------------------------------------------------------
class RequestError(KfloopError):
    """A client mistake: 400 over REST, INVALID_ARGUMENT over gRPC; the message names the field."""


class PayloadTooLargeError(RequestError):
    """More rows than ``serving.max_batch_rows`` (413 over REST)."""


class AlertPayloadError(RequestError):
    """A body the Alertmanager webhook receiver cannot read as a v4 payload (400, the field named)."""


class BadEventError(RequestError):
    """An event the inference-log sink cannot use (missing attributes, bad JSON, unknown type, odd body)."""


class UnknownEntityError(KfloopError):
    """An entity not in the online store (or whose features are older than their view's TTL) while
    ``serving.unknown_entity: reject``, or a model version that is not served (404 / NOT_FOUND)."""


class FeatureLookupError(KfloopError):
    """The feature lookup failed for another reason than an unreachable store (a bug, a corrupt value):
    500 / INTERNAL for this request, with the traceback logged; the store stays marked up."""


# --- serving: readiness ---------------------------------------------------------------------------
class NotReadyError(KfloopError):
    """The model cannot serve now (503 / UNAVAILABLE); the message is KServe's for a model not ready."""

    def __init__(self, model_name: str, detail: str = "") -> None:
        super().__init__(f"Model with name {model_name} is not ready." + (f" {detail}" if detail else ""))
        self.model_name = model_name


class ServerNotReadyError(KfloopError):
    """Something the server needs cannot answer now (503 / UNAVAILABLE); KServe's message for it."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("Server is not ready." + (f" {detail}" if detail else ""))


class OnlineStoreUnavailableError(ServerNotReadyError):
    """The online store cannot be read: readiness false until it answers again."""


class PredictorUnavailableError(ServerNotReadyError):
    """The separate predictor cannot be reached or failed."""


class NoChampionError(KfloopError):
    """Nothing to serve: the registry has no champion (and no --version was given)."""


class PortInUseError(KfloopError):
    """A serving port is taken (another server running?)."""


class WorkerExitedError(KfloopError):
    """A worker of a multi-process ``kfloop serve`` exited before it was ready (its own lines say why)."""


class EncoderError(KfloopError):
    """The inference-log encoder process failed or did not answer in time; the batch is intact and can be
    retried."""


# --- clients --------------------------------------------------------------------------------------
class ServingRequestError(KfloopError):
    """The server refused a request of the serving client (the message is the server's, with the status)."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class PredictError(KfloopError):
    """``kfloop predict``: the server answered with an error (or could not be reached)."""


class PrometheusError(KfloopError):
    """Prometheus could not be reached or refused a query (the message has the URL and its answer)."""


#: The one mapping. A class not named here answers like its nearest named ancestor (KfloopError at last).
STATUSES: dict[type, Status] = {
    KfloopError: Status(500, "INTERNAL", 1),
    ConfigError: Status(400, "INVALID_ARGUMENT", 2),
    PermissionDenied: Status(403, "PERMISSION_DENIED", 1),
    SourceError: Status(422, "INVALID_ARGUMENT", 1),
    GateFailedError: Status(422, "FAILED_PRECONDITION", 1),
    StorageError: Status(503, "UNAVAILABLE", 1),  # and LeaseBusyError, LeaseLostError
    ModelNotFoundError: Status(404, "NOT_FOUND", 1),
    CorruptModelError: Status(500, "DATA_LOSS", 1),
    DeployError: Status(502, "UNAVAILABLE", 1),
    PrometheusError: Status(502, "UNAVAILABLE", 1),
    RequestError: Status(400, "INVALID_ARGUMENT", 1),  # and BadEventError
    PayloadTooLargeError: Status(413, "INVALID_ARGUMENT", 1),
    UnknownEntityError: Status(404, "NOT_FOUND", 1),
    NotReadyError: Status(503, "UNAVAILABLE", 1),
    ServerNotReadyError: Status(503, "UNAVAILABLE", 1),  # online store, remote predictor
    NoChampionError: Status(503, "UNAVAILABLE", 2),
}


def status_of(error: BaseException | type[BaseException]) -> Status:
    """The statuses of ``error`` (an instance or a class): the first class in its MRO the table names."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        status = STATUSES.get(klass)
        if status is not None:
            return status
    raise TypeError(f"{cls.__name__} is not a KfloopError")


def _summary(cls: type) -> str:
    """The first sentence of a class docstring, on one line."""
    text = " ".join((cls.__doc__ or "").split()).replace("``", "`").replace(":data:", "")
    head, dot, _ = text.partition(". ")
    return head + ("." if dot or not head.endswith(".") else "")


def status_table() -> str:
    """Every public error with its statuses, as the Markdown table README.md shows (``make docs``)."""
    classes = [obj for obj in globals().values() if isinstance(obj, type) and issubclass(obj, KfloopError)]
    lines = [
        "<!-- generated from kfloop/errors.py (STATUSES) by `make docs` -->",
        "",
        "| error | when | REST | gRPC | CLI exit |",
        "|---|---|---|---|---|",
    ]
    for cls in classes:
        status = status_of(cls)
        lines.append(f"| `{cls.__name__}` | {_summary(cls)} | {status.http} | `{status.grpc}` | {status.exit_code} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "STATUSES",
    "BadEventError",
    "ConfigError",
    "CorruptModelError",
    "DeployError",
    "EncoderError",
    "ExpressionError",
    "FeatureLookupError",
    "GateFailedError",
    "KfloopError",
    "LeaseBusyError",
    "LeaseLostError",
    "ModelNotFoundError",
    "NoChampionError",
    "NotReadyError",
    "OnlineStoreUnavailableError",
    "PayloadTooLargeError",
    "PermissionDenied",
    "PipelineError",
    "PortInUseError",
    "PredictError",
    "PredictorUnavailableError",
    "RequestError",
    "SchemaChangeError",
    "ServerNotReadyError",
    "ServingRequestError",
    "SourceError",
    "Status",
    "StorageError",
    "UnknownEntityError",
    "WorkerExitedError",
    "status_of",
    "status_table",
]
