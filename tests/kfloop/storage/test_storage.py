"""One suite every storage backend must pass: local directory and S3 (real moto_server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfloop.config import S3StorageConfig, SecretRef
from kfloop.errors import ConfigError
from kfloop.storage import LocalStorage, Storage, resolve_credentials


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "ws")
    return request.getfixturevalue("s3_storage")


def test_write_read_overwrite(storage: Storage) -> None:
    storage.write_bytes("a/b/c.bin", b"one")
    assert storage.read_bytes("a/b/c.bin") == b"one"
    storage.write_text("a/b/c.bin", "two")
    assert storage.read_text("a/b/c.bin") == "two"


def test_missing_key_is_file_not_found(storage: Storage) -> None:
    assert not storage.exists("nope/x.json")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("nope/x.json")


def test_list_is_recursive_sorted_and_prefix_scoped(storage: Storage) -> None:
    for key in ("d/2.txt", "d/sub/1.txt", "d/1.txt", "other/1.txt"):
        storage.write_text(key, key)
    assert storage.list("d/") == ["d/1.txt", "d/2.txt", "d/sub/1.txt"]
    assert storage.list("empty/") == []


def test_upload_download_and_delete(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 << 20))
    storage.upload_file(src, "files/big.bin")
    out = tmp_path / "out.bin"
    storage.download_file("files/big.bin", out)
    assert out.read_bytes() == src.read_bytes()
    storage.delete("files/big.bin")
    storage.delete("files/big.bin")  # absent is fine
    assert not storage.exists("files/big.bin")


def test_move_file_stores_and_consumes(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "part.bin"
    src.write_bytes(b"payload")
    storage.move_file(src, "m/part.bin")
    assert storage.read_bytes("m/part.bin") == b"payload"
    assert not src.exists()


def test_create_exclusive_only_once(storage: Storage) -> None:
    assert storage.create_exclusive("locks/a", b"first")
    assert not storage.create_exclusive("locks/a", b"second")
    assert storage.read_bytes("locks/a") == b"first"
    storage.delete("locks/a")
    assert storage.create_exclusive("locks/a", b"third")


def test_copy_and_modified(storage: Storage) -> None:
    from datetime import UTC, datetime, timedelta

    storage.write_bytes("stage/a.bin", b"payload")
    storage.copy("stage/a.bin", "final/a.bin")
    storage.delete("stage/a.bin")
    assert storage.read_bytes("final/a.bin") == b"payload"
    storage.write_bytes("final/b.bin", b"old")
    storage.write_bytes("stage/b.bin", b"new")
    storage.copy("stage/b.bin", "final/b.bin")  # replaces
    assert storage.read_bytes("final/b.bin") == b"new"
    with pytest.raises(FileNotFoundError):
        storage.copy("stage/none.bin", "final/none.bin")
    age = datetime.now(UTC) - storage.modified("final/b.bin")
    assert timedelta(seconds=-2) < age < timedelta(seconds=60)
    with pytest.raises(FileNotFoundError):
        storage.modified("stage/none.bin")


def test_uri_names_the_location(storage: Storage) -> None:
    uri = storage.uri("lake/x/_manifest.json")
    assert uri.endswith("lake/x/_manifest.json")
    assert uri.startswith(("/", "s3://"))


def test_local_keys_cannot_escape_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalStorage(tmp_path).write_text("../outside.txt", "x")


def test_local_create_exclusive_without_hard_links_falls_back_to_o_excl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what SMB / FUSE object stores answer

    monkeypatch.setattr("kfloop.storage.local.os.link", no_links)
    storage = LocalStorage(tmp_path)
    assert storage.create_exclusive("locks/a", b"first")
    assert not storage.create_exclusive("locks/a", b"second")
    assert storage.read_bytes("locks/a") == b"first"
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["a"]  # no temporary file left behind


def test_local_write_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_text("k.txt", "old")

    def boom(fh: object) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        storage._atomic_place("k.txt", boom)
    assert storage.read_text("k.txt") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["k.txt"]


def test_credentials_come_from_the_named_env_vars() -> None:
    cfg = S3StorageConfig(
        type="s3", endpoint="h:9000", bucket="bkt", access_key=SecretRef(env="MY_AK"), secret_key=SecretRef(env="MY_SK")
    )
    creds = resolve_credentials(cfg, {"MY_AK": "a", "MY_SK": "b"})
    assert (creds.access_key, creds.secret_key) == ("a", "b")
    with pytest.raises(ConfigError, match="MY_SK"):
        resolve_credentials(cfg, {"MY_AK": "a"})


def test_unreachable_s3_endpoint_is_a_storage_error_naming_it() -> None:
    import urllib3
    from minio import Minio

    from kfloop.errors import StorageError
    from kfloop.storage import S3Storage
    from tests.conftest import free_port

    port = free_port()  # nothing listens there; no retries, so the test is quick
    http = urllib3.PoolManager(retries=urllib3.Retry(total=0))
    client = Minio(f"127.0.0.1:{port}", "a", "b", secure=False, region="us-east-1", http_client=http)
    with pytest.raises(StorageError, match=rf"s3://bkt: S3 endpoint 127.0.0.1:{port} unreachable"):
        S3Storage(client, "bkt")
