"""A fault-injecting HTTP proxy in front of moto_server: what an S3 endpoint does on a bad day.

Every request is forwarded to the upstream unless the proxy decides (seeded, in arrival order) to inject a fault:

- ``5xx-before``: answer 500 InternalError / 503 SlowDown without forwarding (the request never happened);
- ``5xx-after``: forward, then answer 500/503 instead of the upstream's answer (the request happened, its answer
  was lost: a retried write must be idempotent, a retried conditional create must not see itself as a conflict);
- ``stall-before``: hold the request past the client's read timeout without forwarding, then drop the connection;
- ``stall-after``: forward, then hold the answer past the timeout and drop the connection;
- ``cut-body``: forward, then send the headers and only half of the body, and drop the connection (GETs with a
  body; other requests get ``5xx-after`` instead).

Threaded (one thread per client connection, keep-alive), standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import random
import socket
import threading
from collections import Counter, deque
from collections.abc import Iterable

FAULT_KINDS = ("5xx-before", "5xx-after", "stall-before", "stall-after", "cut-body")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "proxy-authorization", "te", "upgrade"}
_ERRORS = (
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (503, "SlowDown", "Please reduce your request rate."),
    (503, "ServiceUnavailable", "Service is unable to handle request."),
)


class FaultProxy:
    """Listens on 127.0.0.1 (a free port); forwards to ``upstream`` (host:port). No faults until :meth:`configure`."""

    def __init__(self, upstream: str, *, seed: int = 0, stall_s: float = 3.0) -> None:
        self.upstream = upstream
        self.stall_s = stall_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rate = 0.0
        self._kinds: tuple[str, ...] = ()
        self._script: deque[str | None] = deque()
        self._stop = threading.Event()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # stalled handlers give up at once
        self._server.shutdown()
        self._server.server_close()

    def configure(self, rate: float, kinds: Iterable[str] = FAULT_KINDS) -> None:
        """Inject a fault into a ``rate`` share of the requests from now on, of a kind drawn from ``kinds``."""
        kinds = tuple(kinds)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not 0 <= rate <= 1 or (rate and not kinds):
            raise ValueError(f"fault proxy: rate {rate} must be in [0, 1], kinds from {FAULT_KINDS} (got {kinds})")
        with self._lock:
            self._rate, self._kinds = rate, kinds

    def script(self, kinds: Iterable[str | None]) -> None:
        """The next requests get exactly these faults (None: forwarded), before any drawn at random."""
        kinds = list(kinds)
        if set(kinds) - {*FAULT_KINDS, None}:
            raise ValueError(f"fault proxy: script kinds must be from {FAULT_KINDS} or None (got {kinds})")
        with self._lock:
            self._script.extend(kinds)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.injected)

    def _draw(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self._script:
                return self._script.popleft()
            if not self._rate or self._rng.random() >= self._rate:
                return None
            return self._rng.choice(self._kinds)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _error(self) -> tuple[int, str, str]:
        with self._lock:
            return self._rng.choice(_ERRORS)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy
    _local = threading.local()

    def setup(self) -> None:
        super().setup()  # headers and body go out in separate writes: without this, Nagle + delayed ACKs add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _upstream(self, method: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):  # a pooled connection the upstream closed meanwhile: reconnect once
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.owner.upstream, timeout=60)
            try:
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_error(self) -> None:
        status, code, message = self.owner._error()
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{self.path.split('?')[0]}</Resource><RequestId>soak-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        method = self.command
        body = self._read_body()
        fault = self.owner._draw()
        if fault is not None and fault != "cut-body":
            self.owner._count(fault)
        if fault == "5xx-before":
            self._send_error()
            return
        if fault == "stall-before":
            self.owner._stop.wait(self.owner.stall_s)
            self._drop()
            return
        try:
            status, reason, headers, data = self._upstream(method, body)
        except (http.client.HTTPException, OSError) as err:
            data = f"soak proxy: upstream {self.owner.upstream} failed: {err}".encode()
            self.send_response_only(502)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fault == "cut-body" and (method != "GET" or len(data) < 2 or status >= 300):
            fault = "5xx-after"  # nothing to cut: lose the answer instead
            self.owner._count(fault)
        if fault == "5xx-after":
            self._send_error()
            return
        if fault == "stall-after":
            self.owner._stop.wait(self.owner.stall_s)
            self._drop()
            return
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP and not (name.lower() == "content-length" and method != "HEAD"):
                self.send_header(name, value)
        if method != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method == "HEAD" or status in (204, 304):
            return
        if fault == "cut-body":
            self.owner._count(fault)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._drop()
            return
        self.wfile.write(data)
