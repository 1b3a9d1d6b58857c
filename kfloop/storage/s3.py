"""S3 backend through the minio client: works against MinIO, SeaweedFS, AWS S3 and moto_server.

S3 object PUTs are atomic per object, so ``write_bytes`` needs no temporary key. Every failure comes
out as ``FileNotFoundError`` (absent object) or a ``StorageError`` naming the URI and the cause.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from kfloop.errors import StorageError
from kfloop.layout import probe_key
from kfloop.storage.base import Storage

_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")
_CONFLICT_RETRIES = 20  # ConditionalRequestConflict: a concurrent conditional write on the key; AWS says retry
_PROBED: set[tuple[str, str]] = set()  # (endpoint, bucket) pairs whose conditional PUT was proven in-process
_PROBED_LOCK = threading.Lock()


class _ConflictError(Exception):
    """Internal: the endpoint answered ConditionalRequestConflict; retry the conditional PUT."""


@dataclass(frozen=True)
class S3Credentials:
    """Resolved at the entrypoint from the config's secret references."""

    access_key: str
    secret_key: str


def make_client(endpoint: str, creds: S3Credentials, *, secure: bool, region: str | None) -> Minio:
    """A minio client for ``endpoint`` (host:port)."""
    return Minio(endpoint, access_key=creds.access_key, secret_key=creds.secret_key, secure=secure, region=region)


class S3Storage(Storage):
    """Workspace under ``s3://bucket/prefix/``."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        with self._errors(f"s3://{bucket}"):
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        self._check_conditional_writes()

    def _endpoint(self) -> str:
        base = getattr(self.client, "_base_url", None)
        return getattr(base, "host", "") or "?"

    def _check_conditional_writes(self) -> None:
        """Leases and version numbers rely on ``If-None-Match: *``; an endpoint that ignores it would let
        two runs both "create" the same lock, silently. Prove it once per endpoint and bucket: a second
        conditional create of a probe key must be refused."""
        ident = (self._endpoint(), self.bucket)
        with _PROBED_LOCK:
            if ident in _PROBED:
                return
        probe = probe_key(secrets.token_hex(8))
        try:
            first = self.create_exclusive(probe, b"probe")
            second = self.create_exclusive(probe, b"probe")
        finally:
            with contextlib.suppress(StorageError, FileNotFoundError):
                self.delete(probe)
        if not first or second:
            raise StorageError(
                f"S3 endpoint {ident[0]} ignores If-None-Match (s3://{self.bucket}): conditional writes are "
                "required for leases; use a MinIO release from August 2024 or later, AWS S3, or moto"
            )
        with _PROBED_LOCK:
            _PROBED.add(ident)

    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Translate client errors: absent objects → FileNotFoundError, the rest → StorageError."""
        try:
            yield
        except S3Error as err:
            if err.code in _MISSING:
                raise FileNotFoundError(uri) from err
            raise StorageError(f"{uri}: {err.code}: {err.message}") from err
        except (HTTPError, MinioException, OSError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            reason = getattr(err, "reason", None) or err
            raise StorageError(f"{uri}: S3 endpoint {self._endpoint()} unreachable or failing: {reason}") from err

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        with self._errors(self.uri(key)):
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._errors(self.uri(key)):
            self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Conditional PUT (``If-None-Match: *``): S3, MinIO and moto refuse it with 412
        ``PreconditionFailed`` if the key exists. Decided by the error code and HTTP status, never by
        message text. The minio client's public ``put_object`` cannot send that header, so this uses
        its PutObject call."""
        uri = self.uri(key)
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with self._errors(uri):
                    try:
                        self.client._put_object(self.bucket, self._key(key), data, headers={"If-None-Match": "*"})
                    except S3Error as err:
                        status = getattr(err.response, "status", None)
                        if err.code == "PreconditionFailed" or status == 412:
                            return False
                        if err.code != "ConditionalRequestConflict":
                            raise
                        raise _ConflictError from None
            except _ConflictError:
                time.sleep(min(0.01 * 2**attempt, 0.5))
                continue
            return True
        raise StorageError(f"{uri}: conditional create kept conflicting ({_CONFLICT_RETRIES} tries)")

    def modified(self, key: str) -> datetime:
        with self._errors(self.uri(key)):
            stat = self.client.stat_object(self.bucket, self._key(key))
        if stat.last_modified is None:
            raise StorageError(f"{self.uri(key)}: the endpoint reported no Last-Modified time")
        return stat.last_modified.astimezone(UTC)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side CopyObject: the bytes never leave the endpoint."""
        with self._errors(self.uri(src_key)):
            self.client.copy_object(self.bucket, self._key(dst_key), CopySource(self.bucket, self._key(src_key)))

    def upload_file(self, local_path: Path, key: str) -> None:
        with self._errors(self.uri(key)):
            self.client.fput_object(self.bucket, self._key(key), str(local_path))

    def download_file(self, key: str, local_path: Path) -> None:
        with self._errors(self.uri(key)):
            self.client.fget_object(self.bucket, self._key(key), str(local_path))

    def exists(self, key: str) -> bool:
        try:
            with self._errors(self.uri(key)):
                self.client.stat_object(self.bucket, self._key(key))
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(self.uri(prefix)):
            objs = list(self.client.list_objects(self.bucket, prefix=full, recursive=True))
        return sorted(o.object_name[cut:] for o in objs if o.object_name is not None)

    def delete(self, key: str) -> None:
        with self._errors(self.uri(key)):
            self.client.remove_object(self.bucket, self._key(key))
