"""Open-loop load generator for the serving benchmark: a constant request rate over HTTP/1.1 or gRPC.

Why open loop: a closed loop (N clients each waiting for its answer) slows down with the server and so
hides queueing; here request ``i`` is due at ``i / rate`` whatever happened before, and a request that
finds every connection busy waits for one, the wait counted in its latency.

Why a separate process: the generator must not share an interpreter (GIL, event loop) with anything
it measures. :class:`LoadGenerator` keeps one worker process for a whole benchmark, so each run pays
no interpreter start-up. Requests are pre-encoded bytes (whole HTTP requests; serialized protobuf
messages for gRPC), so the worker does no JSON or protobuf work: one tool, equally cheap for REST and
gRPC. HTTP runs on a minimal keep-alive client (an asyncio ``Protocol`` that reads status lines and
``Content-Length`` / chunked bodies), far cheaper per request than httpx or aiohttp.

Latency is from dispatch (the moment the worker starts request ``i``, before it waits for a free
connection) to the last byte of the answer. How late dispatch ran against the schedule is reported as
``lag``: on a busy 2-core machine the worker itself can fall behind, and a run whose lag grows is not
holding its offered rate (the rate search treats that as a failed step).
"""

from __future__ import annotations

import asyncio
import math
import pickle
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from benchmarks.harness import percentile

if TYPE_CHECKING:
    from benchmarks.serving_closed import ClosedSpec


@dataclass(frozen=True)
class HttpTarget:
    """Whole HTTP/1.1 requests (keep-alive), sent in turn to ``host:port``."""

    host: str
    port: int
    requests: tuple[bytes, ...]


@dataclass(frozen=True)
class GrpcTarget:
    """Serialized request messages for one unary gRPC ``method`` (``/package.Service/Method``), over
    ``channels`` connections taken in turn (a server of several processes sharing its port gets each
    connection on one process: a single channel would load one of them)."""

    address: str
    method: str
    requests: tuple[bytes, ...]
    channels: int = 1


@dataclass(frozen=True)
class PairTarget:
    """A feature server, then a model server, for each request: what a client of that pair does.

    Request ``i`` first sends ``lookup.requests[i]`` (pre-encoded, e.g. Feast's ``/get-online-features``),
    then POSTs to ``host:port`` + ``path`` the V2 body :func:`pair_body` builds from that answer (the looked-up
    values) and the request's own inputs. Its latency runs from dispatch to the second answer."""

    lookup: HttpTarget
    host: str
    port: int
    path: str
    features: tuple[tuple[int, str, str], ...]  # (index in the lookup answer's results, V2 input name, datatype)
    own: tuple[bytes, ...]  # per request: its own V2 inputs, JSON objects joined by commas


def pair_body(target: PairTarget, i: int, answer: bytes) -> bytes:
    """The model server's V2 JSON body for request ``i``: the features of the lookup ``answer`` (Feast's
    ``{"results": [{"values": [...]}, ...]}``) and the request's own inputs (the client's glue code)."""
    results = orjson.loads(answer)["results"]
    looked = [{"name": n, "shape": [1], "datatype": t, "data": results[j]["values"]} for j, n, t in target.features]
    return b'{"inputs":[' + orjson.dumps(looked)[1:-1] + b"," + target.own[i % len(target.own)] + b"]}"


Target = HttpTarget | GrpcTarget | PairTarget


def http_request(host: str, port: int, method: str, path: str, body: bytes = b"", content_type: str = "") -> bytes:
    """One pre-encoded HTTP/1.1 keep-alive request."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class LoadSpec:
    """``count`` requests at ``rate`` per second; at most ``max_connections`` HTTP connections."""

    target: Target
    rate: float
    count: int
    max_connections: int = 128
    initial_connections: int = 8
    timeout: float = 10.0


@dataclass
class LoadResult:
    """What one run saw. ``latencies`` (seconds) are those of the successful requests, in send order."""

    rate: float
    count: int
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0  # first dispatch → last answer
    connections: int = 0  # most open at once (HTTP); 1 channel for gRPC

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else math.inf

    def lag(self, q: float) -> float:
        return percentile(self.lags, q) if self.lags else 0.0


# --- HTTP/1.1 ---------------------------------------------------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight; resolves each answer's (status, body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed by the server ({exc})"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self._complete()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        body_start = end + 4
        length = _header(head, b"content-length")
        if length is not None:
            total = body_start + int(length)
            if len(buf) < total:
                return
        elif _header(head, b"transfer-encoding") == b"chunked":
            total = _chunked_end(buf, body_start)
            if total < 0:
                return
        else:  # no framing: the body ends when the server closes (never the case for the servers measured)
            return
        status = int(head[9:12])
        if _header(head, b"connection") == b"close":
            self.closed = True
        body = bytes(buf[body_start:total])  # chunked: as framed (only a pair's lookup answer is read)
        del buf[:total]
        assert self.waiter is not None
        self.waiter.set_result((status, body))


def _header(head: bytes, name: bytes) -> bytes | None:
    """A header's value from a lower-cased response head (the first occurrence)."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else len(head)].strip()


def _chunked_end(buf: bytearray, pos: int) -> int:
    """Offset just past a chunked body starting at ``pos``, or -1 while it is incomplete."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return -1
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)  # no trailers expected: the empty line ends the body
            return -1 if trailer_end < 0 else trailer_end + 2
        pos += size + 2
        if pos > len(buf):
            return -1


class _HttpPool:
    """Idle connections first, a new one while under the cap, else wait for one to come back."""

    def __init__(self, host: str, port: int, cap: int) -> None:
        self.host, self.port, self.cap = host, port, cap
        self.loop = asyncio.get_running_loop()
        self.idle: deque[_HttpConnection] = deque()
        self.waiters: deque[asyncio.Future[_HttpConnection]] = deque()
        self.opened = 0
        self.peak = 0  # most connections open at once
        self.all: list[_HttpConnection] = []

    async def open(self) -> _HttpConnection:
        self.opened += 1
        try:
            _, conn = await self.loop.create_connection(lambda: _HttpConnection(self.loop), self.host, self.port)
        except OSError:
            self.opened -= 1
            raise
        self.all.append(conn)
        self.peak = max(self.peak, self.opened)
        return conn

    async def acquire(self) -> _HttpConnection:
        while self.idle:
            conn = self.idle.popleft()
            if not conn.closed:
                return conn
            self.opened -= 1
        if self.opened < self.cap:
            return await self.open()
        waiter: asyncio.Future[_HttpConnection] = self.loop.create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, conn: _HttpConnection) -> None:
        if conn.closed:
            self.opened -= 1
            conn.close()
            if self.waiters and self.opened < self.cap:  # a waiter gets a fresh connection instead
                waiter = self.waiters.popleft()
                task = self.loop.create_task(self.open())
                task.add_done_callback(lambda t: _settle(waiter, t))
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.all:
            conn.close()


def _settle(waiter: asyncio.Future[_HttpConnection], task: asyncio.Task[_HttpConnection]) -> None:
    if waiter.done():
        return
    if task.exception() is not None:
        waiter.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(task.result())


# --- the schedule -----------------------------------------------------------------------------------


class _HttpClient:
    """Sends request ``i`` of an :class:`HttpTarget` on a pooled connection; a non-200 answer raises."""

    def __init__(self, target: HttpTarget, spec: LoadSpec) -> None:
        self.requests = target.requests
        self.pool = _HttpPool(target.host, target.port, spec.max_connections)
        self.initial = min(spec.initial_connections, spec.count)

    async def start(self) -> None:
        for conn in await asyncio.gather(*(self.pool.open() for _ in range(self.initial))):
            self.pool.release(conn)

    async def send(self, i: int) -> None:
        status, _ = await _exchange(self.pool, self.requests[i % len(self.requests)])
        if status != 200:
            raise RuntimeError(f"HTTP {status}")

    async def close(self) -> int:
        self.pool.close()
        return self.pool.peak


async def _exchange(pool: _HttpPool, request: bytes) -> tuple[int, bytes]:
    conn = await pool.acquire()
    try:
        return await conn.send(request)
    finally:
        pool.release(conn)


class _PairClient:
    """Sends request ``i`` of a :class:`PairTarget`: the lookup, then the model call built from its answer."""

    def __init__(self, target: PairTarget, spec: LoadSpec) -> None:
        self.target = target
        self.lookups = _HttpPool(target.lookup.host, target.lookup.port, spec.max_connections)
        self.models = _HttpPool(target.host, target.port, spec.max_connections)
        self.initial = min(spec.initial_connections, spec.count)

    async def start(self) -> None:
        for pool in (self.lookups, self.models):
            for conn in await asyncio.gather(*(pool.open() for _ in range(self.initial))):
                pool.release(conn)

    async def send(self, i: int) -> None:
        t = self.target
        status, answer = await _exchange(self.lookups, t.lookup.requests[i % len(t.lookup.requests)])
        if status != 200:
            raise RuntimeError(f"HTTP {status} from the feature server")
        request = http_request(t.host, t.port, "POST", t.path, pair_body(t, i, answer), "application/json")
        status, _ = await _exchange(self.models, request)
        if status != 200:
            raise RuntimeError(f"HTTP {status} from the model server")

    async def close(self) -> int:
        self.lookups.close()
        self.models.close()
        return max(self.lookups.peak, self.models.peak)


class _GrpcClient:
    """Sends request ``i`` of a :class:`GrpcTarget` on its channels in turn (HTTP/2 multiplexes the calls)."""

    def __init__(self, target: GrpcTarget, spec: LoadSpec) -> None:
        import grpc

        self.requests = target.requests
        self.timeout = spec.timeout
        # channels to one target share one connection unless each keeps its own subchannels
        options = [("grpc.use_local_subchannel_pool", 1)] if target.channels > 1 else []
        self.channels = [grpc.aio.insecure_channel(target.address, options=options) for _ in range(target.channels)]
        # bytes in, bytes out: no protobuf work here
        self.calls = [channel.unary_unary(target.method) for channel in self.channels]

    async def start(self) -> None:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in self.channels)), self.timeout)

    async def send(self, i: int) -> None:
        await self.calls[i % len(self.calls)](self.requests[i % len(self.requests)], timeout=self.timeout)

    async def close(self) -> int:
        for channel in self.channels:
            await channel.close()
        return len(self.channels)


def make_client(target: Target, spec: LoadSpec) -> _HttpClient | _GrpcClient | _PairClient:
    if isinstance(target, HttpTarget):
        return _HttpClient(target, spec)
    if isinstance(target, PairTarget):
        return _PairClient(target, spec)
    return _GrpcClient(target, spec)


async def _run(spec: LoadSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    result = LoadResult(spec.rate, spec.count)
    clock = time.perf_counter
    target = spec.target
    client = make_client(target, spec)
    await client.start()
    latencies: list[tuple[int, float]] = []

    def failed(err: BaseException | str) -> None:
        result.errors += 1
        if result.first_error is None:
            result.first_error = str(err) or type(err).__name__

    async def one(i: int, t0: float) -> None:
        try:
            await client.send(i)
        except Exception as err:  # every failure is counted, the run goes on
            failed(err)
            return
        latencies.append((i, clock() - t0))

    tasks: list[asyncio.Task[None]] = []
    interval = 1.0 / spec.rate
    start = clock()
    i = 0
    while i < spec.count:
        now = clock()
        due = start + i * interval
        while i < spec.count and due <= now:
            result.lags.append(now - due)
            tasks.append(loop.create_task(one(i, now)))
            i += 1
            due = start + i * interval
        if i < spec.count:
            await asyncio.sleep(max(0.0, due - clock()))
    _, pending = await asyncio.wait(tasks, timeout=spec.timeout)
    result.elapsed = clock() - start
    for task in pending:
        task.cancel()
        failed(f"no answer within {spec.timeout:g} s")
    result.latencies = [lat for _, lat in sorted(latencies)]
    result.connections = await client.close()
    return result


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed: the cheaper loop leaves more CPU to the server under test."""
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover (uvloop comes with uvicorn[standard])
        return asyncio.new_event_loop


def run_load(spec: LoadSpec) -> LoadResult:
    """One run in this process."""
    if spec.rate <= 0 or spec.count < 1:
        raise ValueError(f"rate and count must be positive, got {spec.rate} and {spec.count}")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run(spec))


def _worker() -> None:
    """The worker's loop: length-prefixed pickled :class:`LoadSpec` in on stdin, :class:`LoadResult` out."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while header := stdin.read(8):
        spec = pickle.loads(stdin.read(int.from_bytes(header, "big")))
        if isinstance(spec, LoadSpec):
            data = pickle.dumps(run_load(spec))
        else:  # a ClosedSpec (benchmarks/serving_closed.py)
            from benchmarks.serving_closed import run_closed

            data = pickle.dumps(run_closed(spec))
        stdout.write(len(data).to_bytes(8, "big") + data)
        stdout.flush()


class LoadGenerator:
    """One worker process (``python -m benchmarks.serving_load``) kept for many runs; a context manager.

    A plain subprocess rather than multiprocessing: nothing re-imports the caller's ``__main__``."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serving_load"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def run(self, spec: LoadSpec | ClosedSpec) -> LoadResult:
        """One open-loop (:class:`LoadSpec`) or closed-loop (``ClosedSpec``) run in the worker."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        data = pickle.dumps(spec)
        self._proc.stdin.write(len(data).to_bytes(8, "big") + data)
        self._proc.stdin.flush()
        header = self._proc.stdout.read(8)
        if len(header) < 8:
            raise RuntimeError(f"the load generator exited (code {self._proc.wait()})")
        result: LoadResult = pickle.loads(self._proc.stdout.read(int.from_bytes(header, "big")))
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    from benchmarks.serving_load import _worker as worker  # the importable module, so results unpickle

    worker()
