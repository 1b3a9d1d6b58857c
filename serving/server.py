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
import gc
import logging
import shutil
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import kserve.model_server as kserve_server
from fastapi.exceptions import RequestValidationError
from kserve import ModelServer
from kserve.errors import InferenceError, InvalidInput, ModelNotFound
from kserve.logging import KSERVE_LOGGER_NAME, KSERVE_TRACE_LOGGER_NAME
from kserve.logging import logger as kserve_logger
from kserve.predictor_config import PredictorConfig
from kserve.protocol.rest.server import TimingMiddleware  # KServe's own (timing_asgi's), as it adds it
from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.config import LOOP_FACTORIES
from uvicorn.importer import import_from_string

from kfloop.config import Config
from kfloop.errors import KfloopError, RequestError
from kfloop.registry import ModelRegistry
from kfloop.serving._status import QUIET, GrpcServer, http_error
from kfloop.serving.champion import ChampionWatch
from kfloop.serving.metrics import RestGuard
from kfloop.serving.ports import ALL_INTERFACES, LOCAL_HOST, check_ports
from kfloop.serving.predictor import Predictor
from kfloop.serving.request_samples import RequestSampler
from kfloop.serving.routes import install_infer_routes
from kfloop.serving.transformer import Transformer
from kfloop.serving.warmup import WarmUp
from kfloop.serving.worker_slot import WORKER_HEADER, WorkerSlot, metrics_dir, metrics_route
from kfloop.storage import Storage

log = kserve_logger  # configured by KServe: our lines land beside the server's

#: The in-process predictor is also served on its own, taking the model's input columns directly.
PREDICTOR_SUFFIX = "-predictor"


async def _malformed(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's V2 body validation (malformed JSON, wrong field types) as KServe-style 400s."""
    errors = getattr(exc, "errors", lambda: [])()
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5]]
    return JSONResponse(status_code=400, content={"error": "invalid request body: " + "; ".join(parts)})


class _LoopFactoryPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, with new event loops from ``factory`` (``asyncio.run`` takes no loop factory in
    Python 3.11)."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__()
        self._factory = factory

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._factory()


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
        access_log: bool = False,
        worker: WorkerSlot | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(enable_latency_logging=False, **kwargs)
        self._host = host
        self._access_log = access_log  # KServe's per-request timing and gRPC call lines feed only that log
        self._worker = worker
        self._background = background
        self._on_stop = on_stop
        app = kserve_server.app
        if not_ready is not None:
            self._add_ready_reason(app, not_ready)
        models = self.registered_models
        header = None if worker is None else (WORKER_HEADER.encode(), worker.name.encode())
        known = lambda m: models.get_model(m) is not None  # noqa: E731
        app.add_middleware(RestGuard, max_body_bytes=max_body_bytes, known=known, header=header)
        app.add_exception_handler(RequestValidationError, _malformed)
        app.add_exception_handler(KfloopError, http_error)  # gRPC: GrpcServer, started in _serve
        self._with_grpc, self.enable_grpc = self.enable_grpc, False
        self._wrap_decode()  # before the routes take the data plane
        install_infer_routes(app, self.dataplane, self.model_repository_extension, self._served_version)
        if worker is not None:  # every worker's counts, not only this one's
            app.router.routes.insert(0, metrics_route(metrics_dir(worker.run_dir)))
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

    def _served_version(self, model_name: str) -> str | None:
        return getattr(self.registered_models.get_model(model_name), "served_version", None)

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

    def start(self, models: list[Any]) -> None:
        """KServe's ``start``, on the event loop KServe configures for uvicorn (``--event-loop``: uvloop when
        installed, as MLServer runs). KServe's ``asyncio.run`` would otherwise run REST and gRPC on the
        stdlib loop, whatever that setting says."""
        factory = import_from_string(LOOP_FACTORIES[self.event_loop])(use_subprocess=False)
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_LoopFactoryPolicy(factory))
        try:
            super().start(models)
        finally:
            asyncio.set_event_loop_policy(previous)

    @staticmethod
    def _drop_timing(app: Any) -> None:
        """KServe's TimingMiddleware times every request (two getrusage calls, a second route match) only to
        log it at INFO on ``kserve.trace``, which is off unless ``serving.access_log``."""
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    async def _serve(self) -> None:
        if self._rest_server is not None:  # KServe hard-codes 0.0.0.0; uvicorn reads the host when it binds
            self._rest_server.config.host = self._host
            build = self._rest_server.create_application  # KServe's start() calls it: routes, middleware

            def create_application() -> None:
                build()
                if not self._access_log:
                    self._drop_timing(kserve_server.app)

            self._rest_server.create_application = create_application
            if self._worker is not None:  # the port shared with the siblings, and this worker's own
                server = self._rest_server._server
                server.serve = partial(server.serve, sockets=self._worker.sockets)
        if self._with_grpc:  # KServe's own gRPC server would answer our errors INTERNAL
            self._grpc_server = GrpcServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_server.args),
                grace_period=self.grace_period,
                host=self._host,
                own_port=None if self._worker is None else self._worker.grpc_port,
                log_calls=self._access_log,
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


def open_inference_log(config: Config, storage: Storage, writer: str = "") -> Any:
    """The inference log (None when disabled); ``writer`` goes in its file names (a worker's, so that
    sibling workers' files can never share a name)."""
    if not config.serving.inference_log.enabled:
        return None
    from kfloop.serving.inference_log import InferenceLog

    return InferenceLog(storage, config, writer=writer)


def open_request_samples(config: Config, storage: Storage) -> RequestSampler:
    """The per-minute request samples of the model the client calls (the serving SLOs without Prometheus)."""
    return RequestSampler(storage, [config.training.model_name], log=log)


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
    warm_up: bool = False,
    worker: WorkerSlot | None = None,
) -> None:
    """Run KServe's REST and gRPC servers for ``models`` on ``host`` until SIGINT/SIGTERM; ``on_stop`` always
    runs. ``not_ready`` says why the server is not ready (None when it is). With ``warm_up`` (the endpoint
    clients call) the server first answers its own request of each protocol (:mod:`kfloop.serving.warmup`).
    As one ``worker`` of several (:mod:`kfloop.serving.worker_slot`) it shares the ports with its siblings and
    warms up through its own."""
    if worker is None:
        check_ports(http_port, grpc_port, host)
        local = LOCAL_HOST if host in (ALL_INTERFACES, "::") else (f"[{host}]" if ":" in host else host)
        own_http, own_grpc = http_port, grpc_port
    else:  # the supervisor checked the shared ports; the siblings hold them now
        local, own_http, own_grpc = LOCAL_HOST, *worker.bind(host, http_port)
    if warm_up:
        warm = WarmUp(config, f"http://{local}:{own_http}", f"{local}:{own_grpc}")
        background = [*background, warm.run]
        reason = not_ready

        def not_ready() -> str | None:
            return (reason() if reason is not None else None) or warm.not_ready_reason()

    if worker is not None:
        own = not_ready
        background = [*background, partial(worker.run, own or (lambda: None))]

        def not_ready() -> str | None:
            return (own() if own is not None else None) or worker.siblings_not_ready()

    server = KfloopModelServer(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_body_bytes=config.serving.max_body_bytes,
        background=background,
        on_stop=on_stop,
        not_ready=not_ready,
        predictor_config=predictor_config or PredictorConfig(predictor_host=None),
        access_log=config.serving.access_log,
        worker=worker,
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
    worker: WorkerSlot | None = None,
) -> None:
    """Serve the champion (or ``version``) with the Feast transformer in this process until SIGINT/SIGTERM,
    on ``host`` (this machine only by default, as local dev servers do); buffered inference-log rows are
    written before it returns. With ``serving.workers`` > 1 this process supervises that many such servers
    (:mod:`kfloop.serving.workers`), each run with its ``worker`` slot."""
    name = config.training.model_name
    http_port = http_port or config.serving.http_port
    grpc_port = grpc_port or config.serving.grpc_port
    if worker is None and config.serving.workers > 1:
        from kfloop.serving.workers import serve_workers

        ports = (http_port, grpc_port)
        serve_workers(config, storage, environ, version=version, ports=ports, on_ready=on_ready, host=host)
        return
    if worker is None:  # a worker's supervisor checked them (its siblings hold them by now)
        check_ports(http_port, grpc_port, host)  # before loading anything: fail in a second, not after the model load
    workdir = Path(tempfile.mkdtemp(prefix="kfloop-serve-"))
    predictor = Predictor(name + PREDICTOR_SUFFIX, workdir / "pending", max_rows=config.serving.max_batch_rows)
    watch = ChampionWatch(config, ModelRegistry(storage, name), predictor, workdir, version)
    watch.start()  # no champion (or an unknown --version) fails here; a bad one starts not ready
    lookup = open_lookup(config, storage, environ)
    inference_log = open_inference_log(config, storage, writer="" if worker is None else f"w{worker.index}")
    transformer = Transformer(config, lookup, predictor=predictor, log=inference_log)
    transformer.load()
    transformer.probe_store()
    # a worker's requests are recorded by its supervisor, from every worker's metrics at once
    samples = open_request_samples(config, storage) if worker is None else None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if samples is not None:
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
            *([] if samples is None else [samples.run]),
        ],
        on_stop=stop,
        not_ready=transformer.not_ready_reason,
        host=host,
        warm_up=True,
        worker=worker,
    )
