"""The ``storage`` section: the workspace lives in a local directory or in an S3 bucket."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kfloop.config._base import Section


class SecretRef(Section):
    """Where a secret comes from: an environment variable locally, a Kubernetes Secret on a cluster.

    The config never holds the secret itself; the entrypoint resolves ``env`` once at start-up.
    """

    env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", description="Environment variable holding the value.")
    secret_name: str | None = Field(None, description="Kubernetes Secret mounted as that variable on a cluster.")
    secret_key: str | None = Field(None, description="Key inside the Kubernetes Secret.")


class LocalStorageConfig(Section):
    """Embedded default: a directory on this machine."""

    type: Literal["local"] = Field("local", description="A directory on this machine.")
    root: str = Field(".kfloop", min_length=1, description="Workspace directory (relative to the CWD).")


class S3StorageConfig(Section):
    """Any S3 API endpoint (MinIO, SeaweedFS, AWS S3, ...), spoken through the minio client."""

    type: Literal["s3"] = Field(description="An S3 API endpoint.")
    endpoint: str = Field(min_length=1, description="host:port of the S3 endpoint, without scheme.")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", description="Bucket of the workspace.")
    prefix: str = Field("kfloop", description="Key prefix of the workspace inside the bucket.")
    secure: bool = Field(True, description="Use TLS.")
    region: str | None = Field(None, description="Bucket region, when the endpoint needs one.")
    access_key: SecretRef = Field(
        SecretRef(env="AWS_ACCESS_KEY_ID", secret_name="kfloop-s3", secret_key="accesskey"),
        description="Where the access key comes from.",
    )
    secret_key: SecretRef = Field(
        SecretRef(env="AWS_SECRET_ACCESS_KEY", secret_name="kfloop-s3", secret_key="secretkey"),
        description="Where the secret key comes from.",
    )


StorageConfig = Annotated[LocalStorageConfig | S3StorageConfig, Field(discriminator="type")]


def s3_endpoint(storage: LocalStorageConfig | S3StorageConfig) -> str | None:
    """The S3 endpoint as a URL (Feast's registry and file sources want a scheme); None for local storage."""
    if isinstance(storage, S3StorageConfig):
        return f"{'https' if storage.secure else 'http'}://{storage.endpoint}"
    return None
