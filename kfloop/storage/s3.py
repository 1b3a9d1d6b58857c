"""S3 backend through the minio client: works against MinIO, SeaweedFS, AWS S3 and moto_server.

S3 object PUTs are atomic per object, so ``write_bytes`` needs no temporary key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from minio import Minio
from minio.error import S3Error

from kfloop.errors import StorageError
from kfloop.storage.base import Storage


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
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        except S3Error as err:
            raise StorageError(f"s3://{bucket}: cannot open bucket: {err.code}: {err.message}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        try:
            resp = self.client.get_object(self.bucket, self._key(key))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                raise FileNotFoundError(self.uri(key)) from None
            raise StorageError(f"{self.uri(key)}: {err.code}: {err.message}") from None
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def upload_file(self, local_path: Path, key: str) -> None:
        self.client.fput_object(self.bucket, self._key(key), str(local_path))

    def download_file(self, key: str, local_path: Path) -> None:
        try:
            self.client.fget_object(self.bucket, self._key(key), str(local_path))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                raise FileNotFoundError(self.uri(key)) from None
            raise StorageError(f"{self.uri(key)}: {err.code}: {err.message}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, self._key(key))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise StorageError(f"{self.uri(key)}: {err.code}: {err.message}") from None
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        objs = self.client.list_objects(self.bucket, prefix=full, recursive=True)
        return sorted(o.object_name[cut:] for o in objs if o.object_name is not None)

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._key(key))
