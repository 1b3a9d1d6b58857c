"""S3 backend through the minio client: works against MinIO, SeaweedFS, AWS S3 and moto_server.

S3 object PUTs are atomic per object, so ``write_bytes`` needs no temporary key. Every failure comes
out as ``FileNotFoundError`` (absent object) or a ``StorageError`` naming the URI and the cause.

Transient failures are retried where that is safe. The client (:func:`make_client`) retries what urllib3 can
(5xx answers, refused connections and timeouts of idempotent requests, as minio's default client does) within
bounded timeouts; this module retries the rest of an operation that is idempotent as a whole: a body that broke
off half-way, a 5xx answer to one of a multipart upload's POSTs, a dropped connection. The one write that is
not idempotent, the conditional create, tells its own earlier attempt apart from another writer's object by a
token it sends as object metadata (see :meth:`S3Storage.create_exclusive`).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from kfloop.errors import StorageError
from kfloop.layout import probe_key
from kfloop.storage.base import Storage

_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")
_CONFLICT_RETRIES = 20  # ConditionalRequestConflict: a concurrent conditional write on the key; AWS says retry
_PROBED: set[tuple[str, str]] = set()  # (endpoint, bucket) pairs whose conditional PUT was proven in-process
_PROBED_LOCK = threading.Lock()
#: Seconds to connect, and to wait for each read of an answer. minio's own default is 5 minutes for both: a
#: stalled endpoint would hold a step (and outlast a lease's heartbeat period) that long before any retry.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # boto3's default
#: Attempts of one idempotent operation whose failure the client did not retry itself (see the module docstring).
ATTEMPTS = 5
_BACKOFF_S, _BACKOFF_MAX_S = 0.2, 5.0
#: S3 error codes that say "try again" (besides any 5xx status): throttling and server-side timeouts.
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
#: Object metadata a conditional create sends: its token proves a refused retry found its own first attempt.
_CREATE_TOKEN = "x-amz-meta-kfloop-create"
_T = TypeVar("_T")


class _ConflictError(Exception):
    """Internal: the endpoint answered ConditionalRequestConflict; retry the conditional PUT."""


@dataclass(frozen=True)
class S3Credentials:
    """Resolved at the entrypoint from the config's secret references."""

    access_key: str
    secret_key: str


def make_client(
    endpoint: str,
    creds: S3Credentials,
    *,
    secure: bool,
    region: str | None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> Minio:
    """A minio client for ``endpoint`` (host:port): minio's default HTTP client (its retries of 5xx answers and
    failed connections, its CA bundle) with bounded timeouts instead of its five minutes."""
    client = Minio(endpoint, access_key=creds.access_key, secret_key=creds.secret_key, secure=secure, region=region)
    client._http.connection_pool_kw["timeout"] = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
    return client


def transient(err: BaseException | None) -> bool:
    """Whether a client error is worth retrying: a 5xx answer or throttling, a connection that broke or timed
    out. Not when urllib3 already retried the request until it gave up (``MaxRetryError``)."""
    if isinstance(err, S3Error):
        return (getattr(err.response, "status", 0) or 0) >= 500 or err.code in _TRANSIENT_CODES
    if isinstance(err, ServerError):
        return err.status_code >= 500
    if isinstance(err, InvalidResponseError):  # a non-XML answer, e.g. a load balancer's 502 page
        return "Response code: 5" in str(err)
    if isinstance(err, MaxRetryError):
        return False
    return isinstance(err, ProtocolError | Urllib3Timeout | ConnectionError)


def _backoff(attempt: int) -> float:
    return min(_BACKOFF_S * 2 ** (attempt - 1), _BACKOFF_MAX_S) * random.uniform(0.5, 1.5)


class S3Storage(Storage):
    """Workspace under ``s3://bucket/prefix/``."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if not self._call(f"s3://{bucket}", lambda: client.bucket_exists(bucket)):
            self._call(f"s3://{bucket}", self._make_bucket)
        self._check_conditional_writes()

    def _make_bucket(self) -> None:
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as err:  # a retry whose first attempt made it, or a concurrent run
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

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

    def _call(self, uri: str, op: Callable[[], _T]) -> _T:
        """``op`` (idempotent as a whole), retried with backoff while it fails transiently; errors translated."""
        for attempt in itertools.count(1):
            try:
                with self._errors(uri):
                    return op()
            except StorageError as err:
                if not transient(err.__cause__):
                    raise
                if attempt >= ATTEMPTS:
                    raise StorageError(f"{err} (still failing after {attempt} attempts)") from err.__cause__
            time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        def read() -> bytes:  # the whole answer inside the retried call: a body may break off half-way
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(self.uri(key), read)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            self.uri(key), lambda: self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))
        )

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Conditional PUT (``If-None-Match: *``): S3, MinIO and moto refuse it with 412
        ``PreconditionFailed`` if the key exists. Decided by the error code and HTTP status, never by
        message text. The minio client's public ``put_object`` cannot send that header, so this uses
        its PutObject call.

        Not idempotent: when an attempt's answer is lost (a 5xx after the write, a dropped connection) the
        retry, ours or urllib3's, is refused by the object that attempt created. So every create sends a fresh
        token as object metadata, and a refusal reads the object's token: its own means this call created it."""
        uri = self.uri(key)
        token = secrets.token_hex(16)
        headers = {"If-None-Match": "*", _CREATE_TOKEN: token}
        failures = conflicts = 0
        while True:
            try:
                with self._errors(uri):
                    try:
                        self.client._put_object(self.bucket, self._key(key), data, headers=headers)
                    except S3Error as err:
                        status = getattr(err.response, "status", None)
                        if err.code == "PreconditionFailed" or status == 412:
                            mine = self._created_by(key, token)
                            if mine is not None:
                                return mine
                            raise _ConflictError from None  # deleted since: the key is free again
                        if err.code != "ConditionalRequestConflict":
                            raise
                        raise _ConflictError from None
            except _ConflictError:
                conflicts += 1
                if conflicts >= _CONFLICT_RETRIES:
                    raise StorageError(f"{uri}: conditional create kept conflicting ({conflicts} tries)") from None
                time.sleep(min(0.01 * 2**conflicts, 0.5))
                continue
            except StorageError as err:
                failures += 1
                if not transient(err.__cause__):
                    raise
                if failures >= ATTEMPTS:
                    raise StorageError(f"{err} (still failing after {failures} attempts)") from err.__cause__
                time.sleep(_backoff(failures))
                continue
            return True

    def _created_by(self, key: str, token: str) -> bool | None:
        """Whether the object at ``key`` was made by the create that sent ``token``; None if it is gone."""
        try:
            stat = self._call(self.uri(key), lambda: self.client.stat_object(self.bucket, self._key(key)))
        except FileNotFoundError:
            return None
        return (stat.metadata or {}).get(_CREATE_TOKEN) == token

    def modified(self, key: str) -> datetime:
        stat = self._call(self.uri(key), lambda: self.client.stat_object(self.bucket, self._key(key)))
        if stat.last_modified is None:
            raise StorageError(f"{self.uri(key)}: the endpoint reported no Last-Modified time")
        return stat.last_modified.astimezone(UTC)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side CopyObject: the bytes never leave the endpoint."""
        src = CopySource(self.bucket, self._key(src_key))
        self._call(self.uri(src_key), lambda: self.client.copy_object(self.bucket, self._key(dst_key), src))

    def upload_file(self, local_path: Path, key: str) -> None:
        self._call(self.uri(key), lambda: self.client.fput_object(self.bucket, self._key(key), str(local_path)))

    def download_file(self, key: str, local_path: Path) -> None:
        part = local_path.with_name(f".{local_path.name}.part")  # the client's partial file, ours to clean up
        try:
            self._call(
                self.uri(key),
                lambda: self.client.fget_object(self.bucket, self._key(key), str(local_path), tmp_file_path=str(part)),
            )
        finally:
            part.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self._call(self.uri(key), lambda: self.client.stat_object(self.bucket, self._key(key)))
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        objs = self._call(
            self.uri(prefix), lambda: list(self.client.list_objects(self.bucket, prefix=full, recursive=True))
        )
        return sorted(o.object_name[cut:] for o in objs if o.object_name is not None)

    def delete(self, key: str) -> None:
        self._call(self.uri(key), lambda: self.client.remove_object(self.bucket, self._key(key)))
