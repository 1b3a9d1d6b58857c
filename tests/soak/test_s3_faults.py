"""kfloop's S3 storage against a real moto_server behind the soak's fault proxy: each fault the soak injects at
random, injected here once, on purpose, with what the storage must make of it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from kfloop.errors import StorageError
from kfloop.storage import S3Storage, make_client
from kfloop.storage import s3 as s3_module
from tests.conftest import S3_CREDS
from tests.soak.proxy import FaultProxy

pytestmark = pytest.mark.s3


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint, stall_s=0.8).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def storage(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    """Through the proxy, with a read timeout shorter than its stalls; no backoff sleeps (the retries still run)."""
    monkeypatch.setattr(s3_module, "_backoff", lambda attempt: 0.0)
    client = make_client(proxy.address, S3_CREDS, secure=False, region=None, connect_timeout_s=1, read_timeout_s=0.4)
    return S3Storage(client, "faults-" + secrets.token_hex(4), prefix="ws")


@pytest.mark.parametrize("fault", ["5xx-after", "stall-after"])
def test_a_conditional_create_whose_answer_was_lost_created_the_object(
    storage: S3Storage, proxy: FaultProxy, fault: str
) -> None:
    proxy.script([fault])  # the PUT lands, its answer does not: the client's retry is refused by that object
    assert storage.create_exclusive("lock/1", b"mine")
    assert proxy.snapshot()[fault] == 1
    assert storage.read_bytes("lock/1") == b"mine"
    assert not storage.create_exclusive("lock/1", b"other")  # another create is still refused
    assert storage.read_bytes("lock/1") == b"mine"


def test_a_conditional_create_refused_before_it_happened_is_retried(storage: S3Storage, proxy: FaultProxy) -> None:
    proxy.script(["5xx-before", "stall-before"])
    assert storage.create_exclusive("lock/2", b"mine")
    assert storage.read_bytes("lock/2") == b"mine"


def test_a_body_broken_off_half_way_is_read_again(storage: S3Storage, proxy: FaultProxy, tmp_path: Path) -> None:
    data = os.urandom(40_000)
    storage.write_bytes("obj", data)
    proxy.script(["cut-body"])
    assert storage.read_bytes("obj") == data
    proxy.script([None, "cut-body"])  # the client asks for the object's size first (HEAD), then GETs it
    storage.download_file("obj", tmp_path / "obj")
    assert (tmp_path / "obj").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["obj"]  # no partial file left beside it
    assert proxy.snapshot()["cut-body"] == 2


def test_writes_and_listings_ride_out_5xx_and_stalls(storage: S3Storage, proxy: FaultProxy) -> None:
    proxy.script(["5xx-after"])
    storage.write_bytes("a/1", b"one")
    proxy.script(["stall-before"])
    storage.copy("a/1", "a/2")
    proxy.script(["5xx-before"])
    assert storage.list("a/") == ["a/1", "a/2"]
    proxy.script(["stall-after"])
    storage.delete("a/1")
    assert storage.list("a/") == ["a/2"]
    assert storage.read_bytes("a/2") == b"one"
    assert sum(proxy.snapshot().values()) == 4


def test_a_failure_that_persists_gives_up_with_the_reason(storage: S3Storage, proxy: FaultProxy) -> None:
    storage.write_bytes("obj", b"x" * 1000)
    proxy.configure(1.0, ["cut-body"])  # every read breaks off
    with pytest.raises(StorageError, match=r"ws/obj: .*IncompleteRead.*still failing after 5 attempts"):
        storage.read_bytes("obj")
    assert proxy.snapshot()["cut-body"] == s3_module.ATTEMPTS


def test_client_errors_are_not_retried(storage: S3Storage, proxy: FaultProxy) -> None:
    before = proxy.requests
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("absent")
    assert proxy.requests - before == 1
