"""One worker of a multi-process ``kfloop serve`` (``serving.workers`` > 1): what it shares with its siblings.

Every worker is a whole server (transformer, predictor, champion watch, inference log) in its own process,
started by :mod:`kfloop.serving.workers`. They share:

- the ports: each binds the HTTP and gRPC ports with ``SO_REUSEPORT``, and the kernel spreads connections
  over them (per connection: a client's keep-alive connection, or a gRPC channel, stays on one worker);
- the metrics: prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor
  before anything imports prometheus_client), so ``/metrics`` of any worker adds every worker's counts up;
- readiness: a worker answers ready once it and every sibling are (a marker file each in the run
  directory), so a client that waits for readiness finds every worker listening.

Each worker also listens on loopback ports of its own, where its warm-up requests go: warming through the
shared ports could land on a sibling and leave this worker cold.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["RUN_DIR_ENV", "WORKER_HEADER", "WorkerSlot", "aggregated_metrics", "metrics_dir", "ready_dir"]

#: The supervisor's run directory (metrics files, readiness markers), given to each worker.
RUN_DIR_ENV = "KFLOOP_SERVING_RUN_DIR"
#: The response header naming the worker that answered (``<index>:<pid>``), on REST answers with workers > 1.
WORKER_HEADER = "x-kfloop-worker"
#: How often a worker looks for its readiness and its supervisor.
POLL_SECONDS = 0.2


def metrics_dir(run_dir: Path) -> Path:
    return run_dir / "metrics"


def ready_dir(run_dir: Path) -> Path:
    return run_dir / "ready"


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, so sibling workers can bind it too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    _no_delay(sock)
    sock.bind((host, port))
    return sock


def _no_delay(sock: socket.socket) -> None:
    """TCP_NODELAY on a listening socket (accepted connections inherit it): the stdlib event loop sets it only
    on sockets made with ``IPPROTO_TCP``, and without it an answer's body waits for the client's delayed ACK
    of its head, 40 ms a request (uvloop sets it on every connection)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class WorkerSlot:
    """Worker ``index`` of ``count`` under the supervisor's ``run_dir``."""

    index: int
    count: int
    run_dir: Path
    sockets: list[socket.socket] = field(default_factory=list, repr=False)  # uvicorn's: shared, own
    grpc_port: int | None = None  # this worker's own gRPC port
    _held: list[socket.socket] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """The worker in answers and file names: its index and pid."""
        return f"{self.index}:{os.getpid()}"

    def bind(self, host: str, http_port: int) -> tuple[int, int]:
        """Bind the shared HTTP port (``SO_REUSEPORT``) and this worker's own loopback ports; returns (own HTTP
        port, own gRPC port). The own gRPC port is held (bound, never listening, with ``SO_REUSEPORT`` as gRPC
        binds it) so that no other process takes it before gRPC binds it."""
        own = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        _no_delay(own)
        own.bind(("127.0.0.1", 0))
        self.sockets = [reuse_port_socket(host, http_port), own]
        held = reuse_port_socket("127.0.0.1", 0)
        self._held.append(held)
        self.grpc_port = int(held.getsockname()[1])
        return int(own.getsockname()[1]), self.grpc_port

    def mark_ready(self) -> None:
        marker = ready_dir(self.run_dir) / str(self.index)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))

    def siblings_not_ready(self) -> str | None:
        """Why not every worker is ready (None when all are)."""
        missing = [i for i in range(self.count) if not (ready_dir(self.run_dir) / str(i)).exists()]
        if not missing:
            return None
        return f"worker(s) {', '.join(map(str, missing))} of {self.count} not ready yet"

    async def run(self, own_reason: Callable[[], str | None]) -> None:
        """Mark this worker ready once ``own_reason()`` is None; end the process (SIGTERM to itself, the
        usual shutdown) when the supervisor is gone."""
        parent = os.getppid()
        marked = False
        while True:
            if not marked and own_reason() is None:
                self.mark_ready()
                marked = True
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(POLL_SECONDS)


def aggregated_metrics(directory: Path) -> CollectorRegistry:
    """Every worker's metrics, added up (counters and histograms summed; gauges by their multiprocess mode)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def metrics_route(directory: Path) -> Route:
    """``/metrics`` answering :func:`aggregated_metrics`, in the format the scraper asks for."""
    registry = aggregated_metrics(directory)

    async def metrics(request: Request) -> Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
        return Response(content=encoder(registry), headers={"content-type": content_type})

    return Route("/metrics", metrics, methods=["GET"])
