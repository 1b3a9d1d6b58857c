"""Bring a source URI to a local file: local paths as they are, ``s3://`` and ``http(s)://`` streamed
to a temporary file (disk, not memory, so files larger than RAM work)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from minio import Minio
from minio.error import S3Error

from kfloop.errors import SourceError


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if not parsed.netloc or not key:
        raise SourceError(f"{uri}: expected s3://bucket/key")
    return parsed.netloc, key


def fetch_to_local(uri: str, workdir: Path, s3: Minio | None = None, timeout_s: float = 60.0) -> Path:
    """Return a local path holding the bytes of ``uri``; remote files land in ``workdir``."""
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        path = Path(urlparse(uri).path if scheme == "file" else uri)
        if not path.is_file():
            raise SourceError(f"{uri}: source file not found")
        return path
    name = Path(urlparse(uri).path).name or "source"
    dest = workdir / name
    if scheme == "s3":
        if s3 is None:
            raise SourceError(f"{uri}: s3:// sources need storage.type 's3' (endpoint and credentials)")
        bucket, key = split_s3_uri(uri)
        try:
            s3.fget_object(bucket, key, str(dest))
        except S3Error as err:
            raise SourceError(f"{uri}: cannot download: {err.code}: {err.message}") from err
        return dest
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri, timeout=timeout_s) as resp, open(dest, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except urllib.error.HTTPError as err:
            raise SourceError(f"{uri}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            raise SourceError(f"{uri}: cannot download: {getattr(err, 'reason', err)}") from err
        return dest
    raise SourceError(f"{uri}: unsupported URI scheme {scheme!r} (use a path, s3:// or http(s)://)")
