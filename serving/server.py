"""Assembling and running the KServe model server: the local one-process server (transformer + predictor)
for ``kfloop serve``, and the separate cluster components (``python -m kfloop.serving``).

Beside KServe's REST and gRPC servers run the background duties: the online-store readiness probe, the
transformer's per-minute request samples (``request_samples.py``, the serving SLOs without Prometheus), and
locally the champion watch (``champion.py``) that hot-switches the predictor (load the new version off
the event loop, then swap one reference: requests in flight finish on the version they started with).
Readiness carries its reason: ``/v2/health/ready`` answers 503 with it, model readiness via KServe.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import shutil
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import kserve.model_server as kserve_server
from fastapi.exceptions import RequestValidationError
from kserve import ModelServer
from kserve.errors import InferenceError, InvalidInput, ModelNotFound
from kserve.logging import KSERVE_LOGGER_NAME, KSERVE_TRACE_LOGGER_NAME
from kserve.logging import logger as kserve_logger
from kserve.predictor_config import PredictorConfig
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kfloop.config import Config
from kfloop.errors import ConfigError, KfloopError, PortInUseError, RequestError, UnknownEntityError
from kfloop.registry import ModelRegistry
from kfloop.serving._status import QUIET, GrpcServer, http_error
from kfloop.serving.champion import ChampionWatch
from kfloop.serving.metrics import RestGuard
from kfloop.serving.predictor import Predictor
from kfloop.serving.request_samples import RequestSampler
from kfloop.serving.transformer import Transformer
from kfloop.storage import Storage

log = kserve_logger  # configured by KServe: our lines land beside the server's

#: The in-process predictor is also served on its own, taking the model's input columns directly.
PREDICTOR_SUFFIX = "-predictor"
#: The cluster components listen on every interface (the kubelet's probes and Knative's queue proxy reach the
#: pod's address); ``kfloop serve`` on this machine only, unless its ``--host`` says otherwise.
ALL_INTERFACES, LOCAL_HOST = "0.0.0.0", "127.0.0.1"


async def _malformed(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's V2 body validation (malformed JSON, wrong field types) as KServe-style 400s."""
    errors = getattr(exc, "errors", lambda: [])()
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5]]
    return JSONResponse(status_code=400, content={"error": "invalid request body: " + "; ".join(parts)})


class KfloopModelServer(ModelServer):
    """``kserve.ModelServer`` plus a body-size guard, request metrics, readiness that includes the online
    store, and background tasks that live and die with the servers."""

    def __init__(
        self,
        *,
        max_body_bytes: int,
        background: list[Callable[[], Awaitable[None]]],
        on_stop: Callable[[], None],
        not_ready: Callable[[], str | None] | None = None,
        host: str = ALL_INTERFACES,
        **kwargs: Any,
    ) -> None:
        super().__init__(enable_latency_logging=False, **kwargs)
        self._host = host
        self._background = background
        self._on_stop = on_stop
        app = kserve_server.app
        if not_ready is not None:
            self._add_ready_reason(app, not_ready)
        models = self.registered_models
        app.add_middleware(RestGuard, max_body_bytes=max_body_bytes, known=lambda m: models.get_model(m) is not None)
        app.add_exception_handler(RequestValidationError, _malformed)
        app.add_exception_handler(KfloopError, http_error)  # gRPC: GrpcServer, started in _serve
        self._with_grpc, self.enable_grpc = self.enable_grpc, False
        self._add_versioned_infer(app)
        self._wrap_decode()
        self._add_versions_to_metadata()

    def _add_ready_reason(self, app: Any, not_ready: Callable[[], str | None]) -> None:
        """Server readiness includes ours (``not_ready`` says why not, None when ready): gRPC ServerReady
        answers false, and ``/v2/health/ready`` (registered before KServe's route) 503 with the reason."""
        kserve_ready = self.dataplane.ready  # checks the remote predictor when configured to

        async def combined() -> bool:
            return not_ready() is None and await kserve_ready()

        self.dataplane.ready = combined

        async def ready() -> JSONResponse:
            reason = not_ready() or (None if await kserve_ready() else "the predictor is not ready")
            if reason:
                body = {"ready": False, "error": f"Server is not ready: {reason}"}
                return JSONResponse(status_code=503, content=body)
            return JSONResponse(content={"ready": True})

        app.add_api_route("/v2/health/ready", ready, methods=["GET"])

    def _add_versions_to_metadata(self) -> None:
        """V2 model metadata lists the served version (KServe leaves ``versions`` empty)."""
        metadata, models = self.dataplane.model_metadata, self.registered_models

        async def with_versions(model_name: str) -> dict:
            body = await metadata(model_name)
            served = getattr(models.get_model(model_name), "served_version", "")
            return {**body, "versions": [served]} if served else body

        self.dataplane.model_metadata = with_versions

    def _add_versioned_infer(self, app: Any) -> None:
        """``/v2/models/<name>/versions/<v>/infer`` (KServe answers 501): served when ``v`` is the version
        being served, 404 otherwise. Registered before KServe's routes, so it takes precedence."""
        endpoints = V2Endpoints(self.dataplane, self.model_repository_extension)
        models = self.registered_models

        async def infer(
            raw_request: Request,
            raw_response: Response,
            model_name: str,
            model_version: str,
            request_body: InferenceRequest | bytes,
        ) -> Any:
            model = models.get_model(model_name)
            served = getattr(model, "served_version", None)
            if model is not None and served and model_version != served:
                raise UnknownEntityError(
                    f"model {model_name!r} version {model_version!r} is not served (serving {served!r})"
                )
            return await endpoints.infer(raw_request, raw_response, model_name, request_body)

        app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", infer, methods=["POST"])

    def _wrap_decode(self) -> None:
        """KServe decodes V2 binary-data bodies before any model code; its errors there (struct, reshape,
        UTF-8) would be 500s. They are the client's: 400 naming the cause."""
        decode = self.dataplane.decode

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return decode(*args, **kwargs)
            except InvalidInput:
                raise
            except (ValueError, TypeError, struct.error, InferenceError, UnicodeDecodeError) as err:
                raise RequestError(f"undecodable request body: {type(err).__name__}: {err}") from err

        self.dataplane.decode = guarded

    async def _serve(self) -> None:
        if self._rest_server is not None:  # KServe hard-codes 0.0.0.0; uvicorn reads the host when it binds
            self._rest_server.config.host = self._host
        if self._with_grpc:  # KServe's own gRPC server would answer our errors INTERNAL
            self._grpc_server = GrpcServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_server.args),
                grace_period=self.grace_period,
                host=self._host,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        tasks = [asyncio.create_task(job()) for job in self._background]
        try:
            await asyncio.gather(*self.servers)
        finally:
            for task in tasks:
                task.cancel()
            self._on_stop()


async def every(seconds: float, job: Callable[[], Any]) -> None:
    """Run ``job`` every ``seconds`` (a sync one in a worker thread); an error is logged, the loop goes on."""
    while True:
        await asyncio.sleep(seconds)
        try:
            if asyncio.iscoroutinefunction(job):
                await job()
            else:  # blocking I/O (a store probe can wait on a dead server) stays off the event loop
                await asyncio.to_thread(job)
        except Exception:
            log.exception("background job %s failed", getattr(job, "__name__", job))


def open_lookup(config: Config, storage: Storage, environ: Mapping[str, str]) -> Any:
    from kfloop.feature_repo.online import ServingLookup
    from kfloop.feature_repo.store import open_store
    from kfloop.serving.clock import serving_clock

    clock = serving_clock(environ)  # TTLs count back from it: the wall clock unless pinned for a replay
    store = open_store(config, storage, environ)
    online = store.config.online_store
    if getattr(online, "type", "") == "redis" and "socket_timeout" not in online.connection_string:
        # redis-py waits forever on a hung server by default; serving must not
        t = config.serving.lookup_timeout_seconds
        online.connection_string += f",socket_timeout={t},socket_connect_timeout={t}"
    full = config.features.naming == "full"  # the names the model was trained on
    return ServingLookup(store, config.features.service, clock=clock, full_feature_names=full)


def open_inference_log(config: Config, storage: Storage) -> Any:
    if not config.serving.inference_log.enabled:
        return None
    from kfloop.serving.inference_log import InferenceLog

    return InferenceLog(storage, config)


def open_request_samples(config: Config, storage: Storage) -> RequestSampler:
    """The per-minute request samples of the model the client calls (the serving SLOs without Prometheus)."""
    return RequestSampler(storage, [config.training.model_name], log=log)


def check_ports(http_port: int, grpc_port: int, host: str = ALL_INTERFACES) -> None:
    """Fail with one clear line before KServe starts (its own bind error is a traceback after startup)."""
    for port, what in ((http_port, "HTTP (serving.http_port, --http-port)"), (grpc_port, "gRPC (serving.grpc_port)")):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as err:
                if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
                    raise ConfigError(f"--host {host!r} is not an address of this machine ({err.strerror})") from err
                raise PortInUseError(f"{what} port {port} is not available ({err.strerror}): another server?") from err


#: Answered with their reason and logged once where the state changes (a refusal, the store going down or
#: up): KServe's traceback for every request or readiness probe meanwhile would flood the log.
_QUIET = (InvalidInput, ModelNotFound, *QUIET)


def _per_request_lines(record: logging.LogRecord) -> bool:
    """Drop KServe's per-call lines (gRPC method names; tracebacks of client mistakes and of answers while
    not ready) when access_log is off."""
    if record.levelno <= logging.INFO and str(record.msg).startswith("grpc method:"):
        return False
    return not (record.exc_info and isinstance(record.exc_info[1], _QUIET))


def run_server(
    config: Config,
    models: list[Any],
    *,
    http_port: int,
    grpc_port: int,
    background: list[Callable[[], Awaitable[None]]],
    on_stop: Callable[[], None],
    not_ready: Callable[[], str | None] | None = None,
    predictor_config: PredictorConfig | None = None,
    host: str = ALL_INTERFACES,
) -> None:
    """Run KServe's REST and gRPC servers for ``models`` on ``host`` until SIGINT/SIGTERM; ``on_stop`` always
    runs. ``not_ready`` says why the server is not ready (None when it is)."""
    check_ports(http_port, grpc_port, host)
    server = KfloopModelServer(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_body_bytes=config.serving.max_body_bytes,
        background=background,
        on_stop=on_stop,
        not_ready=not_ready,
        predictor_config=predictor_config or PredictorConfig(predictor_host=None),
    )
    if not config.serving.access_log:  # after KServe configured logging: one line per request costs CPU
        for name in ("uvicorn.access", KSERVE_TRACE_LOGGER_NAME):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(KSERVE_LOGGER_NAME).addFilter(_per_request_lines)
    # Everything loaded so far (torch, Feast, pandas: ~350k objects) is permanent: without this a full
    # garbage collection walks all of it and pauses serving for 0.2-0.3 s (the benchmark's p99).
    gc.collect()
    gc.freeze()
    try:
        server.start(models)
    finally:
        on_stop()


def serve_local(
    config: Config,
    storage: Storage,
    environ: Mapping[str, str],
    *,
    version: str | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    on_ready: Callable[[str], None] | None = None,
    host: str = LOCAL_HOST,
) -> None:
    """Serve the champion (or ``version``) with the Feast transformer in this process until SIGINT/SIGTERM,
    on ``host`` (this machine only by default, as local dev servers do); buffered inference-log rows are
    written before it returns."""
    name = config.training.model_name
    http_port = http_port or config.serving.http_port
    grpc_port = grpc_port or config.serving.grpc_port
    check_ports(http_port, grpc_port, host)  # before loading anything: fail in a second, not after the model load
    workdir = Path(tempfile.mkdtemp(prefix="kfloop-serve-"))
    predictor = Predictor(name + PREDICTOR_SUFFIX, workdir / "pending", max_rows=config.serving.max_batch_rows)
    watch = ChampionWatch(config, ModelRegistry(storage, name), predictor, workdir, version)
    watch.start()  # no champion (or an unknown --version) fails here; a bad one starts not ready
    lookup = open_lookup(config, storage, environ)
    inference_log = open_inference_log(config, storage)
    transformer = Transformer(config, lookup, predictor=predictor, log=inference_log)
    transformer.load()
    transformer.probe_store()
    samples = open_request_samples(config, storage)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        samples.close()  # the last partial minute, after the last request was answered
        if inference_log is not None:
            inference_log.close()
        shutil.rmtree(workdir, ignore_errors=True)

    if on_ready is not None:
        on_ready(predictor.version or f"nothing yet (not ready: {predictor.not_ready_reason})")
    run_server(
        config,
        [transformer, predictor],
        http_port=http_port,
        grpc_port=grpc_port,
        background=[
            lambda: every(config.serving.store_check_seconds, transformer.probe),
            watch.run,
            samples.run,
        ],
        on_stop=stop,
        not_ready=transformer.not_ready_reason,
        host=host,
    )
