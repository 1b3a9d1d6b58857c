"""The inference routes over REST, registered ahead of KServe's: the same data plane, models and answers,
without FastAPI's per-request work.

KServe's FastAPI routes scan a score of routes to find the infer path, solve each handler's dependencies,
and (V2) validate the body and the answer with pydantic models (:mod:`kfloop.serving.v2_json` says what
that cost). These routes match first and call the same KServe pieces: ``DataPlane.model_ready`` and
``infer`` (so ``Model.__call__``: preprocess, predict, postprocess), ``V1Endpoints.predict`` as it is. A V2
body that is not plain JSON (the binary extension, a cloud event, a body pydantic would coerce or refuse, a
``model_version`` query) goes to KServe's own V2 handler, so its answers and errors stay KServe's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kfloop.errors import UnknownEntityError
from kfloop.serving.v2_json import plain_request, plain_response

__all__ = ["V1_PREDICT", "V2_INFER", "V2_VERSIONED_INFER", "install_infer_routes"]

V1_PREDICT = "/v1/models/{model_name}:predict"
V2_INFER = "/v2/models/{model_name}/infer"
V2_VERSIONED_INFER = "/v2/models/{model_name}/versions/{model_version}/infer"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: The served version of a model (None: the model does not say; any version is taken).
ServedVersion = Callable[[str], str | None]


def check_version(model_name: str, asked: str, served: ServedVersion) -> None:
    """``/versions/<v>/infer`` is served when ``v`` is the version being served; another one is a 404."""
    version = served(model_name)
    if version and asked != version:
        raise UnknownEntityError(f"model {model_name!r} version {asked!r} is not served (serving {version!r})")


def _plain_json(scope: Scope) -> bool:
    """A JSON body (``application/json``), no query and no cloud-event headers: what the fast path decodes."""
    if scope.get("query_string"):
        return False
    json = False
    for key, value in scope["headers"]:
        if key == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif key.startswith(b"ce-"):
            return False
    return json


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, and the message that ended it early (a disconnect), if one did."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks), None


def _replay(body: bytes, end: Message | None) -> Receive:
    messages: list[Message] = [end] if end is not None else [{"type": "http.request", "body": body}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


class V2Infer:
    """ASGI app of a V2 infer path: a plain JSON body is decoded, run and encoded here; anything else goes
    to ``fallback``, KServe's own handler of the path."""

    def __init__(self, dataplane: DataPlane, fallback: APIRoute, served: ServedVersion) -> None:
        self.dataplane = dataplane
        self.fallback = fallback
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, end = await _read_body(receive)
        params = scope["path_params"]
        model_name = params["model_name"]
        request = plain_request(body, model_name) if end is None and _plain_json(scope) else None
        if request is None:
            await self.fallback.handle(scope, _replay(body, end), send)
            return
        if "model_version" in params:
            check_version(model_name, params["model_version"], self.served)
        if not await self.dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        result, response_headers = await self.dataplane.infer(model_name=model_name, request=request, headers=headers)
        content = plain_response(result) if isinstance(result, InferResponse) else None
        if content is None:  # KServe's encoding, as its V2 handler does it
            result, encoded_headers = self.dataplane.encode(model_name, result, headers, req_attributes={})
            response_headers.update(encoded_headers)
            if isinstance(result, bytes):
                content = result
            else:
                content = orjson.dumps(jsonable_encoder(InferenceResponse.model_validate(result)))
        for name in ("content-length", "content-type"):
            response_headers.pop(name, None)
        await Response(content, media_type="application/json", headers=response_headers)(scope, receive, send)


def install_infer_routes(
    app: Any, dataplane: DataPlane, extension: ModelRepositoryExtension | None, served: ServedVersion
) -> None:
    """Put the V1 predict and V2 infer routes (the versioned one too) first in ``app``'s routes."""
    v1 = V1Endpoints(dataplane, extension)
    v2 = V2Endpoints(dataplane, extension)

    async def predict(request: Request) -> Response:
        return await v1.predict(request.path_params["model_name"], request)

    async def versioned(
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        model_version: str,
        request_body: InferenceRequest | bytes,
    ) -> Any:
        check_version(model_name, model_version, served)
        return await v2.infer(raw_request, raw_response, model_name, request_body)

    def v2_route(path: str, handler: Callable[..., Any]) -> Route:
        fallback = APIRoute(path, handler, methods=["POST"], response_model=None)
        return Route(path, V2Infer(dataplane, fallback, served), methods=["POST"])

    routes = [
        Route(V1_PREDICT, predict, methods=["POST"]),
        v2_route(V2_INFER, v2.infer),
        v2_route(V2_VERSIONED_INFER, versioned),
    ]
    app.router.routes[:0] = routes
    app.router._mark_routes_changed()  # FastAPI caches its route tables
