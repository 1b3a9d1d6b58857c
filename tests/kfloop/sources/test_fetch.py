"""kfloop.sources.fetch: a source URI (local path, http(s)://, s3://) brought to a local file, against a real
HTTP server and a real S3 endpoint (moto_server); a URI that cannot be fetched fails naming it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from minio import Minio

from kfloop.errors import SourceError
from kfloop.sources import fetch_to_local, iter_batches, split_s3_uri
from tests.conftest import free_port
from tests.kfloop.sources.files import records, source_config, write

SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "avro": ".avro"}


def test_a_local_path_is_used_in_place(tmp_path: Path) -> None:
    src = write(tmp_path / "tx.csv", records(2), "csv")
    work = tmp_path / "work"
    work.mkdir()
    assert fetch_to_local(str(src), work) == src
    assert fetch_to_local(f"file://{src}", work) == src
    assert list(work.iterdir()) == []  # nothing copied


@pytest.mark.parametrize("uri", ["missing.csv", "file:///nowhere/missing.csv"])
def test_a_missing_local_file_is_named(tmp_path: Path, uri: str) -> None:
    with pytest.raises(SourceError, match=rf"^{uri}: source file not found"):
        fetch_to_local(uri, tmp_path)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_http_sources_of_every_format_download_intact(tmp_path: Path, http_dir: tuple[Path, str], fmt: str) -> None:
    root, base = http_dir
    served = write(root / f"tx{SUFFIX[fmt]}", records(50), fmt)
    work = tmp_path / "work"
    work.mkdir()
    uri = f"{base}/tx{SUFFIX[fmt]}"
    local = fetch_to_local(uri, work)
    assert local.parent == work and local.read_bytes() == served.read_bytes()
    table = pa.concat_tables(b.table for b in iter_batches(local, source_config(), display=uri))
    assert [int(v) for v in table.column("n").to_pylist()] == list(range(50))


def test_http_errors_name_the_url_and_the_status(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    with pytest.raises(SourceError, match=rf"^{base}/nope.csv: HTTP 404 "):
        fetch_to_local(f"{base}/nope.csv", tmp_path)
    refused = f"http://127.0.0.1:{free_port()}/tx.csv"  # nothing listens there
    with pytest.raises(SourceError, match=rf"^{refused}: cannot download: "):
        fetch_to_local(refused, tmp_path, timeout_s=5)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_s3_sources_of_every_format_download_intact(tmp_path: Path, s3_client: Minio, bucket: str, fmt: str) -> None:
    src = write(tmp_path / f"tx{SUFFIX[fmt]}", records(50), fmt)
    s3_client.fput_object(bucket, f"in/2024/tx{SUFFIX[fmt]}", str(src))
    work = tmp_path / "work"
    work.mkdir()
    uri = f"s3://{bucket}/in/2024/tx{SUFFIX[fmt]}"
    local = fetch_to_local(uri, work, s3=s3_client)
    assert local.parent == work and local.read_bytes() == src.read_bytes()
    table = pa.concat_tables(b.table for b in iter_batches(local, source_config(), display=uri))
    assert [int(v) for v in table.column("n").to_pylist()] == list(range(50))


def test_s3_errors_name_the_uri_and_the_s3_code(tmp_path: Path, s3_client: Minio, bucket: str) -> None:
    with pytest.raises(SourceError, match=rf"^s3://{bucket}/absent.csv: cannot download: NoSuchKey"):
        fetch_to_local(f"s3://{bucket}/absent.csv", tmp_path, s3=s3_client)
    with pytest.raises(SourceError, match=r"^s3://no-such-bucket-kf/a.csv: cannot download: NoSuchBucket"):
        fetch_to_local("s3://no-such-bucket-kf/a.csv", tmp_path, s3=s3_client)


def test_s3_without_an_s3_storage_says_what_to_configure(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^s3://b/k.csv: s3:// sources need storage.type 's3'"):
        fetch_to_local("s3://b/k.csv", tmp_path)


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3://bucket-only/", "s3:///key.csv"])
def test_a_malformed_s3_uri_is_refused(uri: str) -> None:
    with pytest.raises(SourceError, match=rf"^{uri}: expected s3://bucket/key"):
        split_s3_uri(uri)
    assert split_s3_uri("s3://bkt/a/b/c.csv") == ("bkt", "a/b/c.csv")


def test_an_unsupported_scheme_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^ftp://h/tx.csv: unsupported URI scheme 'ftp'"):
        fetch_to_local("ftp://h/tx.csv", tmp_path)
