"""One root error for kfloop; every failure a user can act on is a subclass with a clear message.

The CLI prints ``str(error)`` on one line and exits with ``exit_code``; servers (later) map the same
classes to HTTP/gRPC statuses via ``http_status``. Keeping the mapping here means one place decides it.
"""

from __future__ import annotations


class KfloopError(Exception):
    """Root of every error kfloop raises on purpose."""

    exit_code: int = 1
    http_status: int = 500


class ConfigError(KfloopError):
    """The config file is missing, unreadable or invalid (message names the key path)."""

    exit_code = 2
    http_status = 400


class SourceError(KfloopError):
    """A source file cannot be fetched or parsed at all (message names the file and the reason)."""

    http_status = 422


class StorageError(KfloopError):
    """Workspace storage (local directory or S3) failed or holds something unexpected."""

    http_status = 503


class LeaseBusyError(StorageError):
    """Another run holds the lease on a piece of shared state (message names it, the holder and since when).
    Retrying later is the fix, hence 503."""

    http_status = 503


class LeaseLostError(StorageError):
    """A lease this run held was taken over (it looked stale): stop before committing anything."""


class GateFailedError(KfloopError):
    """A quality gate stopped the loop (message names each failed check, its count and examples)."""

    http_status = 422


class SchemaChangeError(GateFailedError):
    """Incoming data breaks the contract's schema (message lists every difference by column name)."""


class PipelineError(KfloopError):
    """A pipeline run or compilation failed (message names the failing task)."""
