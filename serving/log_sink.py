"""Receiver for KServe's request logger: CloudEvents in, inference-log rows out.

On a cluster the InferenceService's ``logger`` (mode ``all``) POSTs each request and its response as two
binary-mode CloudEvents with the same ``ce-id`` and ``ce-type`` ``org.kubeflow.serving.inference.request`` /
``...response`` (KServe ``pkg/logger/worker.go``). This app pairs them, decodes Open Inference Protocol (V2)
or V1 bodies into the log's columns and appends them to the same :class:`InferenceLog` the local server
writes, so the monitor reads one log wherever the model runs.

Run it with ``python -m kfloop.serving.log_sink --port 8080`` (config from ``--config`` or the
``KFLOOP_CONFIG_JSON`` environment variable). SIGTERM drains the log before the process exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

from kfloop._prometheus import drop_inherited_feast_dir
from kfloop.config import Config, S3StorageConfig, config_from_json, load_config
from kfloop.errors import BadEventError, KfloopError, status_of
from kfloop.serving.inference_log import (
    DEFAULTED,
    LABEL,
    PROBABILITIES,
    SCORE,
    VIOLATIONS,
    InferenceLog,
    counter_once,
    logged_inputs,
)
from kfloop.storage import open_storage, resolve_credentials

__all__ = ["PROTOCOL", "REQUEST_TYPE", "RESPONSE_TYPE", "create_app", "main"]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
#: The ``protocol`` value of rows this sink writes.
PROTOCOL = "kserve-logger"
CONFIG_ENV = "KFLOOP_CONFIG_JSON"


UNPAIRED = counter_once(
    "kfloop_log_sink_unpaired_events_total", "Logger events dropped without their partner (expired or over the bound)."
)


@dataclass(frozen=True, slots=True)
class _Half:
    """One decoded event waiting for its partner."""

    kind: str  # REQUEST_TYPE or RESPONSE_TYPE
    columns: dict[str, list]
    rows: int
    model_version: str | None
    received: float


def _event(headers: Mapping[str, str], body: bytes) -> tuple[str, str, Any]:
    """(id, type, JSON data) of a binary-mode event (KServe's) or a structured-mode one."""
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/cloudevents+json"):
        envelope = _json(body, "structured event")
        if not isinstance(envelope, dict):
            raise BadEventError("structured event: the body must be a JSON object")
        event_id, event_type = envelope.get("id"), envelope.get("type")
        if "data_base64" in envelope:
            data = _json(base64.b64decode(envelope["data_base64"]), f"event {event_id}: data_base64")
        else:
            data = envelope.get("data")
    else:
        event_id, event_type, data = headers.get("ce-id"), headers.get("ce-type"), None
    if not event_id:
        raise BadEventError("missing ce-id (the CloudEvents id pairs a request with its response)")
    if event_type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise BadEventError(
            f"event {event_id}: unknown ce-type {event_type!r} (expected {REQUEST_TYPE} or {RESPONSE_TYPE})"
        )
    if data is None:
        data = _json(body, f"event {event_id}: body")
    return str(event_id), event_type, data


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadEventError(f"{what} is not valid JSON: {err}") from err


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    return [v for item in data for v in _flatten(item)]


def _tensor(tensor: Any, where: str) -> tuple[str, list]:
    """Name and one value per row of a V2 tensor ``{name, datatype, shape, data}``."""
    name = tensor["name"]
    if "data" not in tensor:
        raise BadEventError(f"{where}: tensor {name!r} has no 'data' (binary tensor data is not supported)")
    values = _flatten(tensor["data"])
    shape = tensor.get("shape") or [len(values)]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadEventError(f"{where}: tensor {name!r} has an invalid shape {shape!r}")
    if math.prod(shape) != len(values):
        raise BadEventError(f"{where}: tensor {name!r} has shape {shape} but {len(values)} values")
    if math.prod(shape[1:]) != 1:
        raise BadEventError(f"{where}: tensor {name!r} has shape {shape}: expected one value per row")
    return name, values


def _columns(named: Mapping[str, list], where: str) -> tuple[dict[str, list], int]:
    lengths = {len(v) for v in named.values()}
    if len(lengths) > 1:
        raise BadEventError(f"{where}: tensors differ in rows: { ({k: len(v) for k, v in named.items()}) }")
    return dict(named), lengths.pop() if lengths else 0


def _named_tensors(body: dict, key: str, names: Collection[str]) -> dict[str, list]:
    """The tensors of ``body[key]`` named in ``names`` (others, e.g. a model's extra outputs, are not read)."""
    tensors = body[key]
    if not all(isinstance(t, dict) for t in tensors):
        raise BadEventError(f"{key}: each tensor must be an object with 'name', 'shape' and 'data'")
    return dict(_tensor(t, key) for t in tensors if isinstance(t.get("name"), str) and t["name"] in names)


def decode_request(body: Any, known: Collection[str]) -> tuple[dict[str, list], int]:
    """Columns (logged names only) and row count of a V2 (``inputs``) or V1 (``instances``) request."""
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        columns, rows = _columns(_named_tensors(body, "inputs", known), "request inputs")
        empty = not columns
    elif isinstance(body, dict) and isinstance(body.get("instances"), list):
        instances = body["instances"]
        if not all(isinstance(i, dict) for i in instances):
            raise BadEventError("request instances: expected objects keyed by column name")
        named = {c for i in instances for c in i if c in known}
        columns, rows = {c: [i.get(c) for i in instances] for c in named}, len(instances)
        empty = not columns and rows > 0
    else:
        raise BadEventError("request body has neither 'inputs' (V2) nor 'instances' (V1)")
    if empty:
        raise BadEventError("request names no logged column (entity keys, request or stored features)")
    return columns, rows


def _probability_rows(tensor: Any, where: str) -> list[list]:
    """A multiclass ``probabilities`` tensor ([n, k], row-major) as one list per row."""
    values = _flatten(tensor.get("data", []))
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise BadEventError(f"{where}: tensor {PROBABILITIES!r} has shape {shape!r}: expected [n, k]")
    if math.prod(shape) != len(values):
        raise BadEventError(f"{where}: tensor {PROBABILITIES!r} has shape {shape} but {len(values)} values")
    k = shape[1]
    return [values[i * k : (i + 1) * k] for i in range(shape[0])]


def decode_response(body: Any, probabilities: bool = False) -> tuple[dict[str, list], int, str | None]:
    """``score``/``label``/``defaulted`` (and ``violations``) columns, row count and model version of a V2 or
    V1 response; with ``probabilities`` (a multiclass log) also each row's class probabilities, as a list in
    the response's class order (V1: the keys of each prediction's object)."""
    outputs = (SCORE, LABEL, DEFAULTED, VIOLATIONS)
    if isinstance(body, dict) and isinstance(body.get("outputs"), list):
        columns, rows = _columns(_named_tensors(body, "outputs", outputs), "response outputs")
        version = body.get("model_version")
        tensor = next((t for t in body["outputs"] if isinstance(t, dict) and t.get("name") == PROBABILITIES), None)
        if probabilities and tensor is not None:
            table = _probability_rows(tensor, "response outputs")
            if columns and len(table) != rows:
                raise BadEventError(f"response outputs: {PROBABILITIES!r} has {len(table)} rows, the others {rows}")
            columns[PROBABILITIES] = table
    elif isinstance(body, dict) and isinstance(body.get("predictions"), list):
        preds = body["predictions"]
        if all(isinstance(p, dict) for p in preds):
            columns = {k: [p.get(k) for p in preds] for k in outputs if any(k in p for p in preds)}
            if probabilities and any(isinstance(p.get(PROBABILITIES), dict) for p in preds):
                columns[PROBABILITIES] = [
                    list(p[PROBABILITIES].values()) if isinstance(p.get(PROBABILITIES), dict) else None for p in preds
                ]
        elif all(isinstance(p, int | float) and not isinstance(p, bool) for p in preds):
            columns = {SCORE: list(preds)}
        else:
            raise BadEventError("response predictions: expected numbers (scores) or objects with 'score'")
        rows, version = len(preds), body.get("model_version")
    else:
        raise BadEventError("response body has neither 'outputs' (V2) nor 'predictions' (V1)")
    if SCORE not in columns and (rows or "outputs" in body):
        raise BadEventError(f"response has no {SCORE!r} output")
    return columns, rows, None if version is None else str(version)


class _Pairs:
    """Events waiting for their partner, by ce-id: bounded in count and age so unpaired events (a lost
    partner, a logger in ``request`` mode) cannot grow memory. Touched only from the event loop."""

    def __init__(self, ttl: float, max_pending: int, unpaired: Counter) -> None:
        self.ttl, self.max_pending, self._unpaired = ttl, max_pending, unpaired
        self._waiting: OrderedDict[str, _Half] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def match(self, event_id: str, half: _Half) -> _Half | None:
        """The partner of ``half`` if it is waiting; otherwise ``half`` waits (a repeat replaces it)."""
        self._expire(half.received)
        other = self._waiting.pop(event_id, None)
        if other is not None and other.kind != half.kind:
            return other
        if len(self._waiting) >= self.max_pending:
            self._waiting.popitem(last=False)
            self._unpaired.inc()
        self._waiting[event_id] = half
        return None

    def _expire(self, now: float) -> None:
        while self._waiting and now - next(iter(self._waiting.values())).received > self.ttl:
            self._waiting.popitem(last=False)
            self._unpaired.inc()


def create_app(config: Config, log: InferenceLog, *, pending_ttl: float = 60.0, max_pending: int = 10_000) -> FastAPI:
    """The sink app: ``POST /`` takes logger events, ``GET /healthz`` and ``GET /metrics``. Closing the app
    (uvicorn's shutdown on SIGTERM) closes ``log``, writing what it buffered."""
    known = frozenset(logged_inputs(config))
    multiclass = config.training.task == "multiclass"  # the log has a probabilities column
    pairs = _Pairs(pending_ttl, max_pending, UNPAIRED.labels(model=config.training.model_name))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        log.close()

    app = FastAPI(title="kfloop inference log sink", lifespan=lifespan)

    @app.exception_handler(KfloopError)
    async def _error(_: Request, err: KfloopError) -> JSONResponse:
        """The status from kfloop.errors' mapping (a BadEventError is a 400), as the model server answers."""
        return JSONResponse({"error": str(err)}, status_code=status_of(err).http)

    @app.post("/")
    async def receive(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            event_id, event_type, data = _event(request.headers, body)
            if event_type == REQUEST_TYPE:
                columns, rows = decode_request(data, known)
                version = None
            else:
                columns, rows, version = decode_response(data, probabilities=multiclass)
        except (TypeError, ValueError, RecursionError) as err:  # a body shape no check foresaw: still a bad event
            raise BadEventError(f"undecodable event: {type(err).__name__}: {err}") from err
        half = _Half(event_type, columns, rows, version, time.monotonic())
        other = pairs.match(event_id, half)
        if other is None:
            return {"status": "pending", "id": event_id}
        req, resp = (half, other) if half.kind == REQUEST_TYPE else (other, half)
        if req.rows != resp.rows:
            raise BadEventError(f"event {event_id}: request has {req.rows} rows but the response {resp.rows}")
        log.append(
            {**req.columns, **resp.columns}, model_version=resp.model_version, request_id=event_id, protocol=PROTOCOL
        )
        return {"status": "logged", "id": event_id, "rows": req.rows}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pending_events": len(pairs), "buffered_rows": log.buffered_rows}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _load(path: Path | None, environ: Mapping[str, str]) -> Config:
    if path is not None:
        return load_config(path)
    if environ.get(CONFIG_ENV):
        return config_from_json(environ[CONFIG_ENV])
    raise KfloopError(f"no config: pass --config PATH or set {CONFIG_ENV}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entrypoint: read the config, open the workspace storage and serve until SIGTERM."""
    drop_inherited_feast_dir()
    parser = argparse.ArgumentParser(prog="python -m kfloop.serving.log_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help=f"kfloop.yaml (default: JSON in ${CONFIG_ENV})")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pending-ttl", type=float, default=60.0, help="Seconds an event waits for its partner.")
    parser.add_argument("--max-pending", type=int, default=10_000, help="Events waiting for a partner, at most.")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        config = _load(args.config, os.environ)
        s3 = isinstance(config.storage, S3StorageConfig)
        storage = open_storage(config.storage, resolve_credentials(config.storage, os.environ) if s3 else None)
    except KfloopError as err:
        parser.exit(err.exit_code, f"error: {err}\n")
    log = InferenceLog(storage, config)
    app = create_app(config, log, pending_ttl=args.pending_ttl, max_pending=args.max_pending)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
