"""Prometheus metrics on KServe's ``/metrics`` (the default registry), and the REST guard that counts
every request and refuses oversize bodies before anything parses them.

REST requests are counted by an ASGI middleware (it sees every status, including 404/413/422 that
never reach a model); gRPC ones by the models (``observe_grpc``), since KServe's gRPC server takes no
extra interceptors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import orjson
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.protocol.infer_type import InferRequest
from prometheus_client import Counter, Gauge, Histogram

from kfloop.config.slo import SERVING_LATENCY_BUCKETS
from kfloop.errors import KfloopError, status_of
from kfloop.monitoring import metric_names as names
from kfloop.serving.warmup import is_warmup

_BUCKETS = SERVING_LATENCY_BUCKETS  # the latency SLO's thresholds are bucket bounds (kfloop.config.slo)

REQUESTS = Counter(names.REQUESTS, "Inference requests by protocol and status.", ["model", "protocol", "status"])
LATENCY = Histogram(
    names.REQUEST_SECONDS, "Request latency by protocol (server side).", ["model", "protocol"], buckets=_BUCKETS
)
LOOKUP = Histogram(names.LOOKUP_SECONDS, "Online feature lookup per request (Feast).", ["model"], buckets=_BUCKETS)
# Gauges as several workers of one server add up (prometheus_client's multiprocess mode, serving.workers > 1;
# ignored in one process): a version is served while any live worker serves it; the store is up when every
# live worker's last probe reached it.
MODEL_VERSION = Gauge(
    names.MODEL_VERSION_INFO, "1 for the model version being served.", ["model", "version"], multiprocess_mode="livemax"
)
STORE_UP = Gauge(
    names.STORE_UP,
    "1 when the online store answered the last readiness probe.",
    ["model"],
    multiprocess_mode="livemin",
)
MODEL_REFUSED = Counter(
    names.MODEL_REFUSED,
    "Champion versions refused (never served): reason corrupt, unloadable or inputs (do not match the config).",
    ["model", "version", "reason"],
)
RELOAD_ERRORS = Counter(
    names.RELOAD_ERRORS, "Transient errors reading or fetching the champion (retried with backoff).", ["model"]
)
CONTRACT_VIOLATIONS = Counter(
    names.CONTRACT_VIOLATIONS,
    "Request rows with a value outside the data contract's allowed values, by check (flagged or rejected).",
    ["model", "check"],
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def set_model_version(model: str, version: str, previous: str | None = None) -> None:
    if previous and previous != version:
        MODEL_VERSION.labels(model, previous).set(0)
    MODEL_VERSION.labels(model, version).set(1)


def _rest_route(path: str) -> tuple[str, str] | None:
    """(protocol, model) of an inference path, None for health/metadata/metrics."""
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "v1" and parts[1] == "models" and parts[2].endswith(":predict"):
        return "v1", parts[2].removesuffix(":predict")
    if len(parts) >= 4 and parts[0] == "v2" and parts[1] == "models" and parts[-1] == "infer":
        return "v2", parts[2]
    return None


class RestGuard:
    """ASGI middleware: 413 for bodies over ``max_body_bytes`` (declared or streamed), and request
    count/latency by protocol and status for the inference routes. ``header`` (name, value) is added to every
    answer (the worker that answered, when several serve one port)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        known: Callable[[str], bool] = lambda _: True,
        header: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.known = known  # metric labels only for served models (a URL must not mint label values)
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = None if _warmup(scope) else _rest_route(scope["path"])  # warm-up: not a client's request
        start = time.perf_counter()
        status = 500
        too_big = self._declared_too_big(scope)
        if too_big is None and scope["method"] == "POST":
            receive, too_big = await self._buffer(receive)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.header is not None:
                    message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        try:
            if too_big:
                await _reply(send_status, 413, too_big)
            else:
                await self.app(scope, receive, send_status)
        finally:
            if route:
                protocol, model = route
                model = model if self.known(model) else "<unknown>"
                REQUESTS.labels(model, protocol, str(status)).inc()
                LATENCY.labels(model, protocol).observe(time.perf_counter() - start)

    def _declared_too_big(self, scope: Scope) -> str | None:
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return f"request body of {int(value)} bytes exceeds serving.max_body_bytes ({self.max_body_bytes})"
        return None

    async def _buffer(self, receive: Receive) -> tuple[Receive, str | None]:
        """Read a streamed body up to the limit; replay it to the app."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message]), None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return receive, f"request body exceeds serving.max_body_bytes ({self.max_body_bytes} bytes)"
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}]), None


def _warmup(scope: Scope) -> bool:
    return any(key == b"x-request-id" and is_warmup(value.decode()) for key, value in scope.get("headers", ()))


def _replay(messages: list[Message]) -> Receive:
    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def _reply(send: Send, status: int, error: str) -> None:
    body = orjson.dumps({"error": error})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def grpc_status(err: BaseException | None) -> str:
    """The status the gRPC server answers for ``err``: ours from kfloop.errors' mapping, KServe's errors
    as KServe's interceptor answers them."""
    if err is None:
        return grpc.StatusCode.OK.name
    if isinstance(err, KfloopError):
        return status_of(err).grpc
    if isinstance(err, (InvalidInput, InferenceError)):
        return grpc.StatusCode.INVALID_ARGUMENT.name
    if isinstance(err, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND.name
    if isinstance(err, (ModelNotReady, ServerNotReady)):
        return grpc.StatusCode.UNAVAILABLE.name
    return grpc.StatusCode.INTERNAL.name


@asynccontextmanager
async def observe_grpc(model: str, body: Any) -> AsyncIterator[None]:
    """Count and time a model call when it came over gRPC (REST calls are counted by RestGuard)."""
    if not (isinstance(body, InferRequest) and body.from_grpc) or is_warmup(body.id):
        yield
        return
    start = time.perf_counter()
    err: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        err = exc
        raise
    finally:
        REQUESTS.labels(model, "grpc", grpc_status(err)).inc()
        LATENCY.labels(model, "grpc").observe(time.perf_counter() - start)
