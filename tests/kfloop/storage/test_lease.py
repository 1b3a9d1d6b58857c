"""The one lease (kfloop.storage.lease): the same suite on a local directory and on S3 (real moto_server).

Races use real processes (fork), each with its own storage client, as separate pipeline pods would.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from kfloop.errors import StorageError
from kfloop.storage import LeaseBusyError, LeaseLostError, LocalStorage, S3Storage, Storage, lease
from kfloop.storage.lease import holder, release
from tests.conftest import S3_CREDS

lease_mod = sys.modules["kfloop.storage.lease"]  # the package re-exports the function under the same name

KEY = "registry/fraud/_lease"
CTX = mp.get_context("fork")  # children get their own client (below), never the parent's connections


@pytest.fixture(params=["local", "s3"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    """How a child process opens the same storage: ("local", root) or ("s3", endpoint, bucket)."""
    if request.param == "local":
        return ("local", str(tmp_path / "ws"))
    s3: S3Storage = request.getfixturevalue("s3_storage")
    return ("s3", request.getfixturevalue("moto_endpoint"), s3.bucket)


def _open(spec: tuple[str, ...]) -> Storage:
    if spec[0] == "local":
        return LocalStorage(spec[1])
    client = Minio(spec[1], access_key=S3_CREDS.access_key, secret_key=S3_CREDS.secret_key, secure=False)
    return S3Storage(client, spec[2], prefix="ws")


def _stale_wait(storage: Storage, stale_after_s: float) -> float:
    """How long a just-written generation takes to look stale on this backend (S3 times are whole seconds)."""
    return stale_after_s + storage.mtime_resolution_s + 0.3


def _write_dead_holder(storage: Storage, body: bytes = b"") -> None:
    storage.write_bytes(f"{KEY}/000000000001", body or json.dumps({"owner": "dead-run", "since": "x"}).encode())


def _attempt(storage: Storage, **kwargs: object) -> None:
    """Take and give back the lease (the caller expects it to be busy or refused)."""
    with lease(storage, KEY, **{"name": "x", **kwargs}):  # type: ignore[arg-type]
        pass


# --- child processes ------------------------------------------------------------------------------
def _race_once(spec: tuple[str, ...], i: int, go: mp.Event, out: mp.Queue) -> None:  # type: ignore[name-defined]
    storage = _open(spec)
    go.wait()
    try:
        with lease(storage, KEY, name="race", owner=f"p{i}", timeout_s=0.5, stale_after_s=2) as held:
            out.put(("won", i, held.token))
            time.sleep(1.5)  # longer than the losers wait; the heartbeat keeps it fresh
    except LeaseBusyError:
        out.put(("busy", i, 0))


def _take_turns(spec: tuple[str, ...], i: int, go: mp.Event, out: mp.Queue) -> None:  # type: ignore[name-defined]
    storage = _open(spec)
    go.wait()
    with lease(storage, KEY, name="turns", owner=f"p{i}", timeout_s=60, stale_after_s=10) as held:
        entered = time.time()
        time.sleep(0.05)
        held.check()
        out.put((held.token, entered, time.time()))


def _hold_forever(spec: tuple[str, ...], held_evt: mp.Event) -> None:  # type: ignore[name-defined]
    storage = _open(spec)
    with lease(storage, KEY, name="victim", owner="doomed-run", stale_after_s=1):
        held_evt.set()
        time.sleep(600)


def _start(target: object, *args: object) -> mp.Process:
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


# --- tests ------------------------------------------------------------------------------------------
def test_eight_processes_racing_for_a_stale_lease_leave_one_holder(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    _write_dead_holder(storage)
    go, out = CTX.Event(), CTX.Queue()
    procs = [_start(_race_once, spec, i, go, out) for i in range(8)]
    time.sleep(_stale_wait(storage, 2))  # the dead holder's generation is stale by now
    go.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    winners = [r for r in results if r[0] == "won"]
    assert len(winners) == 1, results
    assert winners[0][2] == 2  # the fencing token moved past the dead holder's generation 1
    assert holder(storage, KEY).released  # type: ignore[union-attr]


def test_processes_take_turns_with_increasing_tokens(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    go, out = CTX.Event(), CTX.Queue()
    procs = [_start(_take_turns, spec, i, go, out) for i in range(8)]
    go.set()
    turns = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    tokens = [t for t, _, _ in turns]
    assert tokens == sorted(set(tokens)) and len(tokens) == 8  # distinct, and the order they held it in
    for (_, _, left), (_, entered, _) in itertools.pairwise(turns):
        assert left <= entered  # no two holders at once
    assert len(storage.list(f"{KEY}/")) <= 2  # old generations are cleaned up


@pytest.mark.parametrize("body", [b"", b"{not json"], ids=["empty", "corrupt"])
def test_empty_or_corrupt_lock_is_recovered_in_bounded_time(spec: tuple[str, ...], body: bytes) -> None:
    storage = _open(spec)
    storage.write_bytes(f"{KEY}/000000000001", body)
    with pytest.raises(LeaseBusyError, match=r"held by run unknown \(unreadable lock\)"):
        _attempt(storage, timeout_s=0.2, stale_after_s=1)
    start, cpu = time.monotonic(), time.process_time()
    with lease(storage, KEY, name="x", timeout_s=30, stale_after_s=1) as held:
        assert held.token == 2
    assert time.monotonic() - start < _stale_wait(storage, 1) + 1.5
    assert time.process_time() - cpu < 0.5  # it waited; it did not spin


def test_release_with_a_wrong_token_is_refused(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    with lease(storage, KEY, name="x", owner="real-holder", heartbeat=False) as held:
        assert not release(storage, KEY, held.token + 1)
        assert not release(storage, KEY, held.token - 1)
        assert not release(storage, KEY, held.token, nonce="someone-else")
        top = holder(storage, KEY)
        assert top is not None and not top.released and top.owner == "real-holder"
        held.check()
        with pytest.raises(LeaseBusyError):
            _attempt(storage, timeout_s=0.1)
    assert holder(storage, KEY).released  # type: ignore[union-attr]


def test_a_late_holder_cannot_release_or_renew_its_successors_lease(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    with lease(storage, KEY, name="x", owner="slow", stale_after_s=1, heartbeat=False) as slow:
        time.sleep(_stale_wait(storage, 1))  # stalls past stale_after_s without a heartbeat
        with lease(storage, KEY, name="x", owner="next", stale_after_s=1, timeout_s=10) as fresh:
            assert fresh.token == slow.token + 1
            with pytest.raises(LeaseLostError, match="took generation"):
                slow.check()
            with pytest.raises(LeaseLostError):
                slow.renew()
            assert not slow.release()
            fresh.check()  # untouched by the late holder
            assert holder(storage, KEY).owner == "next"  # type: ignore[union-attr]


def test_bounded_wait_names_the_name_owner_and_since(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    with lease(storage, KEY, name="model registry 'fraud'", owner="run-42") as held:
        start = time.monotonic()
        with pytest.raises(LeaseBusyError) as info:
            _attempt(storage, name="model registry 'fraud'", owner="run-43", timeout_s=0.5)
        assert 0.4 < time.monotonic() - start < 3
    msg = str(info.value)
    assert msg.startswith("model registry 'fraud' is busy: held by run run-42 (")
    assert f":{os.getpid()}) since {held.since}; lock " in msg
    assert storage.uri(f"{KEY}/{held.token:012d}") in msg
    assert isinstance(info.value, StorageError) and info.value.http_status == 503


def test_a_sigkilled_holder_is_taken_over_after_stale_after_s(spec: tuple[str, ...]) -> None:
    storage = _open(spec)
    held_evt = CTX.Event()
    victim = _start(_hold_forever, spec, held_evt)
    assert held_evt.wait(60)
    time.sleep(_stale_wait(storage, 1))  # alive: its heartbeat keeps it from looking stale
    with pytest.raises(LeaseBusyError, match="doomed-run"):
        _attempt(storage, timeout_s=0.2, stale_after_s=1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    start = time.monotonic()
    with lease(storage, KEY, name="x", owner="survivor", timeout_s=30, stale_after_s=1) as held:
        assert held.token == 2
        assert holder(storage, KEY).owner == "survivor"  # type: ignore[union-attr]
    assert time.monotonic() - start < _stale_wait(storage, 1) + 1.5


def test_a_forked_child_leaving_the_with_block_does_not_release_its_parents_lease(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    in_child = False
    try:
        with lease(storage, KEY, name="x", owner="parent", stale_after_s=30) as held:
            pid = os.fork()
            if pid == 0:
                in_child = True
                raise SystemExit(0)  # the child unwinds through lease()'s finally (sys.exit in a worker)
            os.waitpid(pid, 0)
            top = holder(storage, KEY)
            assert top is not None and not top.released and top.token == held.token  # still the parent's
            with pytest.raises(LeaseBusyError, match="held by run parent"):
                _attempt(storage, timeout_s=0.2)
            held.check()
    finally:
        if in_child:
            os._exit(0)
    assert holder(storage, KEY).released  # type: ignore[union-attr]


def test_a_waiter_whose_clock_runs_ahead_does_not_take_over_a_live_lease(
    spec: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _open(spec)
    with lease(storage, KEY, name="x", owner="live-holder", stale_after_s=4):
        real = lease_mod.datetime

        class Ahead(real):  # type: ignore[misc,valid-type]
            @classmethod
            def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
                return real.now(tz) + timedelta(seconds=10)  # this host's clock is 10 s fast

        monkeypatch.setattr(lease_mod, "datetime", Ahead)
        with pytest.raises(LeaseBusyError, match="held by run live-holder"):
            _attempt(storage, timeout_s=1, stale_after_s=4, heartbeat=False)
        monkeypatch.undo()
    assert storage.list(f"{KEY}/") == [f"{KEY}/000000000001"]  # the clock probe is deleted


def test_a_create_whose_answer_was_lost_is_recognised_as_ours(
    spec: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 client retries a conditional PUT whose answer was lost; the retry is refused by its own
    first write. The lease must not then wait (for stale_after_s) on itself."""
    storage = _open(spec)
    real_create = storage.create_exclusive
    monkeypatch.setattr(storage, "create_exclusive", lambda key, data: real_create(key, data) and False)
    start = time.monotonic()
    with lease(storage, KEY, name="x", owner="me", timeout_s=5, stale_after_s=60) as held:
        assert held.token == 1
    assert time.monotonic() - start < 2
    assert holder(storage, KEY).released  # type: ignore[union-attr]


def test_the_heartbeat_survives_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "ws")
    with lease(storage, KEY, name="x", stale_after_s=0.4) as held:
        real_write = storage.write_bytes
        fails = [RuntimeError("a bug in a storage client")]

        def flaky(key: str, data: bytes) -> None:
            if fails:
                raise fails.pop()
            real_write(key, data)

        monkeypatch.setattr(storage, "write_bytes", flaky)
        time.sleep(0.5)
        assert not fails
        beats = held._beats
        time.sleep(0.4)
        assert held._beats > beats  # still renewing
        held.check()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        _attempt(LocalStorage(tmp_path), stale_after_s=0)


# --- S3: conditional writes ------------------------------------------------------------------------
class _StripIfNoneMatch(http.server.BaseHTTPRequestHandler):
    """Forwards every request to moto unchanged except that it drops ``If-None-Match``."""

    upstream = ""

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "if-none-match"}
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ignoring_endpoint(moto_endpoint: str) -> Iterator[str]:
    """An S3 endpoint that ignores If-None-Match: a real HTTP proxy in front of moto that strips it
    (moto itself honours the precondition, as AWS S3 and recent MinIO do)."""
    handler = type("Handler", (_StripIfNoneMatch,), {"upstream": moto_endpoint})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_s3_endpoint_ignoring_if_none_match_is_refused(ignoring_endpoint: str, s3_client: Minio) -> None:
    client = Minio(ignoring_endpoint, access_key=S3_CREDS.access_key, secret_key=S3_CREDS.secret_key, secure=False)
    with pytest.raises(StorageError, match=rf"S3 endpoint {ignoring_endpoint} ignores If-None-Match") as info:
        S3Storage(client, "ignoring-bkt", prefix="ws")
    assert "conditional writes are required for leases" in str(info.value)
    assert list(s3_client.list_objects("ignoring-bkt", recursive=True)) == []  # the probe is deleted


def _s3_error(code: str, status: int, message: str) -> S3Error:
    return S3Error(urllib3.HTTPResponse(status=status), code, message, "/k", "req", "host")


def test_s3_create_exclusive_decides_by_error_code_not_text(
    s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[BaseException | None] = [
        _s3_error("ConditionalRequestConflict", 409, "try again"),
        _s3_error("ConditionalRequestConflict", 409, "try again"),
        None,  # then the PUT succeeds
        _s3_error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold"),
        _s3_error("AccessDenied", 403, "policy 412 denies PutObject"),  # "412" in the text is not a conflict
    ]

    def fake_put(*args: object, **kwargs: object) -> None:
        assert kwargs["headers"]["If-None-Match"] == "*"  # beside it the create's token (object metadata)
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    s3_storage.write_bytes("k", b"theirs")  # what a refused create finds: another writer's object, not its own
    monkeypatch.setattr(s3_storage.client, "_put_object", fake_put)
    assert s3_storage.create_exclusive("k", b"x")  # after two conflicts, retried
    assert not s3_storage.create_exclusive("k", b"x")
    with pytest.raises(StorageError, match="AccessDenied"):
        s3_storage.create_exclusive("k", b"x")
