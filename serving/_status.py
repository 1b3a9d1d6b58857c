"""A ``KfloopError`` on a request → its answer, for REST (V1, V2) and gRPC, from ``kfloop.errors.STATUSES``.

KServe's own errors (raised by KServe code, e.g. ``InvalidInput`` while it decodes a body) keep KServe's
handlers and interceptor. Ours get the status the mapping gives and their message: ``{"error": message}``
over REST, the details over gRPC. A 500 is logged with its traceback (the chained cause included): it is
a bug or an unexpected failure. Other 5xx are logged in one line, except a model or the online store not
being ready, which is said once where readiness changes, not on every request meanwhile; 4xx are the
client's and are not logged.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, NoReturn

import grpc
from grpc import aio
from kserve.logging import logger as log
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from starlette.requests import Request
from starlette.responses import JSONResponse

from kfloop.errors import KfloopError, NotReadyError, OnlineStoreUnavailableError, Status, status_of

#: Said once where readiness changes (the probe, the champion watch), not on each request meanwhile.
QUIET = (NotReadyError, OnlineStoreUnavailableError)


def _log(err: BaseException, status: Status, where: str) -> None:
    if status.http == 500:
        log.error("%s: %s: %s", where, type(err).__name__, err, exc_info=err)
    elif status.http > 500 and not isinstance(err, QUIET):
        cause = f" (cause: {type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ else ""
        log.warning("%s: %d %s: %s%s", where, status.http, type(err).__name__, err, cause)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler for ``KfloopError`` (handled here, not by Starlette's last-resort handler,
    which would re-raise into the ASGI server and reset the connection)."""
    status = status_of(exc)  # registered for KfloopError only
    _log(exc, status, f"{request.method} {request.url.path}")
    return JSONResponse(status_code=status.http, content={"error": str(exc)})


class StatusInterceptor(ExceptionToStatusInterceptor):
    """KServe's gRPC interceptor, answering a ``KfloopError`` from the mapping before KServe looks at it."""

    async def handle_exception(
        self, ex: Exception, request_or_iterator: Any, context: aio.ServicerContext, method_name: str
    ) -> NoReturn:
        if isinstance(ex, KfloopError):
            status = status_of(ex)
            _log(ex, status, method_name)
            await context.abort(grpc.StatusCode[status.grpc], str(ex))
        await super().handle_exception(ex, request_or_iterator, context, method_name)
        raise ex  # not reached: KServe's handler aborts every call it sees


def grpc_address(host: str, port: int) -> str:
    """gRPC's listen address: every interface as ``[::]`` (IPv4 too, as KServe listens), else ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return f"[::]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer(GRPCServer):
    """KServe's gRPC server with :class:`StatusInterceptor`, on ``host`` (and on loopback ``own_port`` too:
    a worker's own port beside the shared one). KServe builds its interceptors and listen address inside
    ``start``, so this ``start`` is KServe 0.21's with ours in their place. gRPC binds with ``SO_REUSEPORT``
    by default (``grpc.so_reuseport``), so sibling workers share the port."""

    def __init__(
        self, *args: Any, host: str = "0.0.0.0", own_port: int | None = None, log_calls: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.address = grpc_address(host, self._port)
        self.own_address = None if own_port is None else grpc_address("127.0.0.1", own_port)
        self.log_calls = log_calls  # KServe's LoggingInterceptor: an INFO line per call (off with the access log)

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), StatusInterceptor()) if self.log_calls else (StatusInterceptor(),),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(self.address)
        if self.own_address is not None:
            self._server.add_insecure_port(self.own_address)
        log.info("Starting gRPC server on %s (%d workers)", self.address, max_workers)
        await self._server.start()
        await self._server.wait_for_termination()
