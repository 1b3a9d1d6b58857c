"""Workspace storage: pick the backend from config; credentials are resolved by the caller."""

from __future__ import annotations

from collections.abc import Mapping

from kfloop.config import LocalStorageConfig, S3StorageConfig
from kfloop.errors import ConfigError
from kfloop.storage.base import Storage
from kfloop.storage.lease import Lease, LeaseBusyError, LeaseLostError, lease
from kfloop.storage.local import LocalStorage
from kfloop.storage.s3 import S3Credentials, S3Storage, make_client

__all__ = [
    "Lease",
    "LeaseBusyError",
    "LeaseLostError",
    "LocalStorage",
    "S3Credentials",
    "S3Storage",
    "Storage",
    "lease",
    "open_storage",
    "resolve_credentials",
]


def resolve_credentials(cfg: S3StorageConfig, environ: Mapping[str, str]) -> S3Credentials:
    """Read the S3 keys named by the config's secret references (called once, at the entrypoint)."""
    missing = [ref.env for ref in (cfg.access_key, cfg.secret_key) if not environ.get(ref.env)]
    if missing:
        raise ConfigError("storage.access_key/secret_key: environment variable(s) not set: " + ", ".join(missing))
    return S3Credentials(environ[cfg.access_key.env], environ[cfg.secret_key.env])


def open_storage(cfg: LocalStorageConfig | S3StorageConfig, creds: S3Credentials | None = None) -> Storage:
    """The workspace storage named by the config."""
    if isinstance(cfg, LocalStorageConfig):
        return LocalStorage(cfg.root)
    if creds is None:
        raise ConfigError("storage: type 's3' needs credentials (see storage.access_key / storage.secret_key)")
    client = make_client(cfg.endpoint, creds, secure=cfg.secure, region=cfg.region)
    return S3Storage(client, cfg.bucket, cfg.prefix)
