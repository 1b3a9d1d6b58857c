"""A stand-in for the Kubeflow Pipelines API server, for the tests of everything that talks to it.

No Kubernetes cluster, and so no Kubeflow Pipelines, can run where the tests run. This is a real HTTP server
that kfp's own client (``kfp.Client`` over ``kfp_server_api``) talks to unchanged: it speaks the slice of the
KFP v2beta1 REST API that ``kfloop submit`` and the cluster retrain send (healthz; pipelines: list with a
filter, get, get by name, create, multipart upload and upload_version; versions: list with a filter, get;
experiments: list with a filter, create; runs: create, get), with the real server's shapes where they matter:
snake_case proto field names, empty lists left out, a duplicate name answered 409 (AlreadyExists), an unknown
id 404, a missing or wrong bearer token 401 when ``token`` is set.

It is stateful (pipelines, versions with their uploaded bytes, experiments, runs), so idempotency is tested
on what a second submission finds, not on canned answers. Two knobs reach the conflict path: ``list_delay``
holds every list answer back, so that racing submitters miss each other's writes; ``stale_lists`` makes the
next list answers of a kind miss everything, as if another submitter wrote just after them (deterministic).
Ids are sequential per kind (``pipeline-1``, ``version-1``, ``exp-1``, ``run-1``) to keep assertions readable.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

API = "/apis/v2beta1"
GRPC_CODES = {400: 3, 401: 16, 404: 5, 409: 6}  # the gRPC code the gateway puts beside the HTTP status


@dataclass
class Call:
    """One request the fake answered."""

    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # JSON body, or for a multipart upload {"uploadfile": bytes}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class FakeKfpApi:
    """The server's state; ``url`` is set while it serves (:func:`serve_kfp_api`)."""

    token: str | None = None  # when set, every request needs ``Authorization: Bearer <token>``
    multi_user: bool = False
    list_delay: float = 0.0
    stale_lists: dict[str, int] = field(default_factory=dict)  # list name → how many next answers miss everything
    run_states: tuple[str, ...] = ("RUNNING", "SUCCEEDED")  # what successive GETs of a run report
    url: str = ""
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    packages: dict[str, bytes] = field(default_factory=dict)  # version id → the uploaded file
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    conflicts: int = 0  # 409s answered
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: dict[str, itertools.count] = field(default_factory=dict)
    _run_gets: dict[str, int] = field(default_factory=dict)

    def posts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    def versions_of(self, pipeline_id: str) -> list[dict]:
        return [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]

    # --- state changes (under the lock) -------------------------------------------------------------
    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids.setdefault(kind, itertools.count(1)))}"

    def _conflict(self, what: str) -> ApiError:
        self.conflicts += 1
        return ApiError(409, f"{what} already exists")

    def create_pipeline(self, name: str, display_name: str, description: str, namespace: str) -> dict:
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise self._conflict(f"pipeline {name!r} in namespace {namespace!r}")
        pipeline = {
            "pipeline_id": self._id("pipeline"),
            "name": name,
            "display_name": display_name or name,
            "description": description,
            "namespace": namespace,
            "created_at": _now(),
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def create_version(self, pipeline_id: str, name: str, description: str, package: bytes) -> dict:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id} not found")
        if any(v["name"] == name for v in self.versions_of(pipeline_id)):
            raise self._conflict(f"pipeline version {name!r}")
        try:
            spec = next(yaml.safe_load_all(package))
        except yaml.YAMLError as err:
            raise ApiError(400, f"invalid pipeline spec: {err}") from err
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._id("version"),
            "name": name,
            "display_name": name,
            "description": description,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        self.packages[version["pipeline_version_id"]] = package
        return version

    def create_experiment(self, body: dict) -> dict:
        name, namespace = body.get("display_name", ""), body.get("namespace", "")
        if any(e["display_name"] == name and e["namespace"] == namespace for e in self.experiments.values()):
            raise self._conflict(f"experiment {name!r}")
        experiment = {
            "experiment_id": self._id("exp"),
            "display_name": name,
            "namespace": namespace,
            "storage_state": "AVAILABLE",
            "created_at": _now(),
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def create_run(self, body: dict) -> dict:
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')} not found")
        ref = body.get("pipeline_version_reference")
        if ref:
            version = self.versions.get(ref.get("pipeline_version_id", ""))
            if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
                raise ApiError(404, f"pipeline version {ref} not found")
        elif "pipeline_spec" not in body:
            raise ApiError(400, "a run needs a pipeline_version_reference or a pipeline_spec")
        run = {k: v for k, v in body.items() if k != "pipeline_spec"}
        run |= {"run_id": self._id("run"), "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.runs[run["run_id"]] = run | {"pipeline_spec": body.get("pipeline_spec")}
        return run

    def get_run(self, run_id: str) -> dict:
        if run_id not in self.runs:
            raise ApiError(404, f"run {run_id} not found")
        n = self._run_gets[run_id] = self._run_gets.get(run_id, 0) + 1
        run = {k: v for k, v in self.runs[run_id].items() if k != "pipeline_spec"}
        return run | {"state": self.run_states[min(n, len(self.run_states)) - 1]}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(item: dict, filter_json: str | None) -> bool:
    """The EQUALS predicates of a filter.proto Filter (what kfp.Client and kfloop send) on name fields."""
    if not filter_json:
        return True
    for predicate in json.loads(filter_json).get("predicates", []):
        if predicate.get("operation") not in (1, "EQUALS"):
            raise ApiError(400, f"unsupported filter operation {predicate.get('operation')!r}")
        key = predicate.get("key")
        if key not in ("name", "display_name"):
            raise ApiError(400, f"unsupported filter key {key!r}")
        value = predicate.get("stringValue", predicate.get("string_value"))
        if item.get(key) != value:
            return False
    return True


def _listed(name: str, items: list[dict]) -> dict:
    """A list answer: protojson leaves an empty repeated field out."""
    return {name: items, "total_size": len(items)} if items else {}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        api = self.server.api
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self._body(raw)
        with api.lock:
            api.calls.append(Call(method, parts.path, query, {k.lower(): v for k, v in self.headers.items()}, body))
        try:
            if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiError(401, "Unauthenticated: no valid bearer token")
            status, answer = 200, self._route(method, parts.path, query, body)
        except ApiError as err:
            status = err.status
            answer = {"error": err.message, "code": GRPC_CODES.get(err.status, 2), "message": err.message}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self, raw: bytes) -> Any:
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {kind}\r\n\r\n".encode() + raw
            )
            parts = message.iter_parts()
            return {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in parts}
        return json.loads(raw) if raw else None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> dict:
        api = self.server.api
        if not path.startswith(API):
            raise ApiError(404, f"no route {path}")
        route = path[len(API) :]
        if method == "GET" and route == "/healthz":
            return {"multi_user": api.multi_user}
        if method == "GET" and route == "/pipelines":
            return self._list(
                "pipelines",
                api.pipelines.values(),
                query,
                lambda p: p["namespace"] == query.get("namespace", ""),
            )
        if method == "POST" and route == "/pipelines":
            with api.lock:
                return api.create_pipeline(
                    body.get("name") or body.get("display_name", ""),
                    body.get("display_name", ""),
                    body.get("description", ""),
                    body.get("namespace", ""),
                )
        if method == "POST" and route == "/pipelines/upload":  # a pipeline and its first version, same name
            name = query.get("name") or query.get("display_name", "")
            with api.lock:
                pipeline = api.create_pipeline(
                    name, query.get("display_name", ""), query.get("description", ""), query.get("namespace", "")
                )
                api.create_version(pipeline["pipeline_id"], name, query.get("description", ""), body["uploadfile"])
            return pipeline
        if method == "POST" and route == "/pipelines/upload_version":
            with api.lock:
                return api.create_version(
                    query.get("pipelineid", ""), query.get("name", ""), query.get("description", ""), body["uploadfile"]
                )
        if method == "GET" and (m := re.fullmatch(r"/pipelines/names/([^/]+)", route)):
            name, namespace = unquote(m.group(1)), query.get("namespace", "")
            found = [p for p in api.pipelines.values() if p["name"] == name and p["namespace"] == namespace]
            if not found:
                raise ApiError(404, f"pipeline {name!r} not found")
            return found[0]
        if method == "GET" and (m := re.fullmatch(r"/pipelines/([^/]+)/versions", route)):
            if m.group(1) not in api.pipelines:
                raise ApiError(404, f"pipeline {m.group(1)} not found")
            return self._list("pipeline_versions", api.versions_of(m.group(1)), query)
        if method == "GET" and (m := re.fullmatch(r"/pipelines/([^/]+)/versions/([^/]+)", route)):
            version = api.versions.get(m.group(2))
            if version is None or version["pipeline_id"] != m.group(1):
                raise ApiError(404, f"pipeline version {m.group(2)} not found")
            return version
        if method == "GET" and (m := re.fullmatch(r"/pipelines/([^/]+)", route)):
            if m.group(1) not in api.pipelines:
                raise ApiError(404, f"pipeline {m.group(1)} not found")
            return api.pipelines[m.group(1)]
        if method == "GET" and route == "/experiments":
            return self._list(
                "experiments",
                api.experiments.values(),
                query,
                lambda e: e["namespace"] == query.get("namespace", ""),
            )
        if method == "POST" and route == "/experiments":
            with api.lock:
                return api.create_experiment(body)
        if method == "POST" and route == "/runs":
            with api.lock:
                return api.create_run(body)
        if method == "GET" and (m := re.fullmatch(r"/runs/([^/]+)", route)):
            with api.lock:
                return api.get_run(m.group(1))
        raise ApiError(404, f"no route {method} {path}")

    def _list(self, name: str, items: Any, query: dict[str, str], keep: Any = None) -> dict:
        api = self.server.api
        with api.lock:
            found = [i for i in list(items) if (keep is None or keep(i)) and _matches(i, query.get("filter"))]
            if api.stale_lists.get(name, 0) > 0:  # as if another client wrote just after this list was read
                api.stale_lists[name] -= 1
                found = []
        time.sleep(api.list_delay)  # answered late: writes landing meanwhile are not in it
        return _listed(name, found[: int(query.get("page_size") or 100)])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    api: FakeKfpApi


@contextmanager
def serve_kfp_api(api: FakeKfpApi | None = None) -> Iterator[FakeKfpApi]:
    """Serve ``api`` (a fresh one by default) on a free local port; ``api.url`` is its endpoint."""
    api = api or FakeKfpApi()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.api = api
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
