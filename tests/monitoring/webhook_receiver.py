"""A local HTTP webhook receiver for the alerting tests: it records every POST body (JSON) and answers the
statuses it is told to, in order (then 200)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict] = []
        self.paths: list[str] = []
        self.attempts = 0  # every POST, answered 200 or not
        self.lock = threading.Lock()
        self.url = ""

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """The bodies received, once there are ``count`` of them (or the timeout has passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        with self.lock:
            return list(self.received)


@contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    """A running receiver on a free local port; ``.url`` ends in ``/hook``."""
    rec = Receiver(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with rec.lock:
                rec.attempts += 1
                status = rec.statuses.pop(0) if rec.statuses else 200
                if status == 200:
                    rec.received.append(json.loads(body))
                    rec.paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
