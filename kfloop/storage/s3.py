"""S3 backend through the minio client: works against MinIO, SeaweedFS, AWS S3 and moto_server.

S3 object PUTs are atomic per object, so ``write_bytes`` needs no temporary key. Every failure comes
out as ``FileNotFoundError`` (absent object) or a ``StorageError`` naming the URI and the cause.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from kfloop.errors import StorageError
from kfloop.storage.base import Storage

_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")


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

    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Translate client errors: absent objects → FileNotFoundError, the rest → StorageError."""
        try:
            yield
        except S3Error as err:
            if err.code in _MISSING:
                raise FileNotFoundError(uri) from None
            raise StorageError(f"{uri}: {err.code}: {err.message}") from None
        except (HTTPError, MinioException, OSError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            endpoint = getattr(self.client, "_base_url", None)
            host = getattr(endpoint, "host", "") if endpoint else ""
            reason = getattr(err, "reason", None) or err
            raise StorageError(f"{uri}: S3 endpoint {host or '?'} unreachable or failing: {reason}") from None

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
        """Conditional PUT (``If-None-Match: *``): S3, MinIO and moto refuse it with 412 if the key exists.
        The minio client's public ``put_object`` cannot send that header, so this uses its PutObject call."""
        try:
            with self._errors(self.uri(key)):
                self.client._put_object(self.bucket, self._key(key), data, headers={"If-None-Match": "*"})
        except StorageError as err:
            if "PreconditionFailed" in str(err) or "412" in str(err):
                return False
            raise
        return True

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
