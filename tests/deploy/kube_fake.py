"""A fake Kubernetes API server for tests: it stands in for the cluster, because no cluster can run here (no
container runtime, no kind, no etcd). A real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 speaks the slice of
the API that :mod:`kfloop.kube.apply` uses, so the kubernetes client runs unmodified (its configuration, auth
header, URL building, JSON) against it:

- discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``, from a configurable set of
  kinds (drop a group to play a cluster without that CRD: ``FakeKubeApi(without_groups={"serving.kserve.io"})``);
- ``GET`` of one object, with a ``Status`` body and 404 when it is absent, as the real server words it;
- server-side apply: ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` (else 415) and a
  ``fieldManager`` (else 400). Each manager's last applied configuration is kept and the object is their merge
  (later managers over earlier ones), so a field a manager stops applying goes away, as with a sole owner in
  the real server. ``uid``, ``creationTimestamp``, ``resourceVersion`` and ``generation`` are set on create;
  ``resourceVersion`` changes only when the object changes, ``generation`` only when more than metadata does
  (the API server's rule, which is how "a second apply changes nothing" is measured). ``dryRun=All`` answers
  the same and stores nothing. 201 on create, 200 otherwise.

Not modelled: field-ownership conflicts (``force`` is recorded, never needed), admission, schemas, lists,
watches, deletes, subresources. Every request is recorded in :attr:`FakeKubeApi.requests`.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from kubernetes.client import ApiClient, Configuration

APPLY = "application/apply-patch+yaml"
CREATED_AT = "2026-01-01T00:00:00Z"


@dataclass(frozen=True)
class Kind:
    """One resource as discovery lists it."""

    kind: str
    plural: str
    namespaced: bool = True


#: group/version → kinds: core, apps, batch, RBAC, networking, policy, autoscaling, and the CRDs kfloop needs.
DEFAULT_KINDS: dict[str, tuple[Kind, ...]] = {
    "v1": (
        Kind("Namespace", "namespaces", namespaced=False),
        Kind("ServiceAccount", "serviceaccounts"),
        Kind("ConfigMap", "configmaps"),
        Kind("Secret", "secrets"),
        Kind("Service", "services"),
        Kind("PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("Pod", "pods"),
    ),
    "apps/v1": (Kind("Deployment", "deployments"), Kind("StatefulSet", "statefulsets")),
    "batch/v1": (Kind("Job", "jobs"), Kind("CronJob", "cronjobs")),
    "rbac.authorization.k8s.io/v1": (
        Kind("Role", "roles"),
        Kind("RoleBinding", "rolebindings"),
        Kind("ClusterRole", "clusterroles", namespaced=False),
        Kind("ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    ),
    "networking.k8s.io/v1": (Kind("NetworkPolicy", "networkpolicies"), Kind("Ingress", "ingresses")),
    "policy/v1": (Kind("PodDisruptionBudget", "poddisruptionbudgets"),),
    "autoscaling/v2": (Kind("HorizontalPodAutoscaler", "horizontalpodautoscalers"),),
    "serving.kserve.io/v1beta1": (Kind("InferenceService", "inferenceservices"),),
    "argoproj.io/v1alpha1": (
        Kind("CronWorkflow", "cronworkflows"),
        Kind("Workflow", "workflows"),
        Kind("WorkflowTemplate", "workflowtemplates"),
    ),
    "monitoring.coreos.com/v1": (Kind("ServiceMonitor", "servicemonitors"), Kind("PrometheusRule", "prometheusrules")),
}

_SERVER_META = ("uid", "creationTimestamp", "resourceVersion", "generation", "managedFields")


@dataclass(frozen=True)
class Request:
    """One request the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    authorization: str | None
    body: Any = None


@dataclass
class _Stored:
    """An object and each field manager's last applied configuration (in first-apply order)."""

    obj: dict
    applied: dict[str, dict] = field(default_factory=dict)


def _merge(base: Any, over: Any) -> Any:
    """``over`` on ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        **({"details": details} if details else {}),
        "code": code,
    }


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.body = code, _status(code, reason, message, details)


class FakeKubeApi:
    """The fake API server; ``with FakeKubeApi() as kube:`` serves on ``kube.url`` until the block ends."""

    def __init__(
        self, kinds: Mapping[str, Iterable[Kind]] = DEFAULT_KINDS, *, without_groups: Iterable[str] = ()
    ) -> None:
        dropped = set(without_groups)
        self.kinds = {gv: tuple(ks) for gv, ks in kinds.items() if gv.rpartition("/")[0] not in dropped}
        self.requests: list[Request] = []
        self.objects: dict[tuple[str, str, str | None, str], _Stored] = {}  # (group/version, plural, ns, name)
        self._rejections: dict[tuple[str, str], tuple[int, str, str]] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> FakeKubeApi:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeKubeApi as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> ApiClient:
        """A kubernetes client pointed at this fake, as ``Configuration(host=...)`` does it."""
        return ApiClient(Configuration(host=self.url))

    def kubeconfig(self, token: str = "fake-token") -> dict:
        """A kubeconfig (as a mapping; dump it to a file) whose current context is this fake."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }

    # --- inspection and faults -----------------------------------------------------------------
    @property
    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """A stored object (a copy), or None."""
        plural = next(k.plural for k in self.kinds[api_version] if k.kind == kind)
        stored = self.objects.get((api_version, plural, namespace, name))
        return copy.deepcopy(stored.obj) if stored else None

    def reject(self, kind: str, name: str, code: int, reason: str, message: str) -> None:
        """Answer every PATCH of ``kind``/``name`` with this error ``Status`` (a 403 from RBAC, a 422 ...)."""
        self._rejections[(kind, name)] = (code, reason, message)

    # --- the API -------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], content_type: str | None, body: Any) -> tuple:
        """(status code, JSON body) for one request."""
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        with self._lock:
            if method == "GET" and parts == ["version"]:
                return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kfloop-fake", "platform": "linux"}
            if method == "GET" and parts == ["api"]:
                return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            if method == "GET" and parts == ["apis"]:
                return 200, self._group_list()
            if parts[:1] == ["api"] and len(parts) >= 2:
                group_version, rest = parts[1], parts[2:]
            elif parts[:1] == ["apis"] and len(parts) >= 3:
                group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
            else:
                raise _ApiError(404, "NotFound", "the server could not find the requested resource")
            if group_version not in self.kinds:
                raise _ApiError(404, "NotFound", "the server could not find the requested resource")
            if not rest and method == "GET":
                return 200, self._resource_list(group_version)
            kind, namespace, name = self._locate(group_version, rest)
            if method == "GET":
                stored = self.objects.get((group_version, kind.plural, namespace, name))
                if stored is None:
                    raise self._not_found(group_version, kind, name)
                return 200, copy.deepcopy(stored.obj)
            if method == "PATCH":
                return self._apply(group_version, kind, namespace, name, query, content_type, body)
            raise _ApiError(405, "MethodNotAllowed", f"the fake does not serve {method}")

    def _group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        for gv in self.kinds:
            group, _, version = gv.rpartition("/")
            if group:
                groups.setdefault(group, []).append(version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    def _resource_list(self, group_version: str) -> dict:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources = []
        for k in self.kinds[group_version]:
            resources.append(
                {
                    "name": k.plural,
                    "singularName": k.kind.lower(),
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": verbs,
                }
            )
            resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": ["get", "patch", "update"]})  # fmt: skip
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    def _locate(self, group_version: str, rest: list[str]) -> tuple[Kind, str | None, str]:
        by_plural = {k.plural: k for k in self.kinds[group_version]}
        if len(rest) == 4 and rest[0] == "namespaces" and rest[2] in by_plural and by_plural[rest[2]].namespaced:
            return by_plural[rest[2]], rest[1], rest[3]
        if len(rest) == 2 and rest[0] in by_plural and not by_plural[rest[0]].namespaced:
            return by_plural[rest[0]], None, rest[1]
        raise _ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _not_found(group_version: str, kind: Kind, name: str) -> _ApiError:
        group = group_version.rpartition("/")[0]
        resource = f"{kind.plural}.{group}" if group else kind.plural
        return _ApiError(
            404, "NotFound", f'{resource} "{name}" not found', {"name": name, "group": group, "kind": kind.plural}
        )

    def _apply(
        self,
        group_version: str,
        kind: Kind,
        namespace: str | None,
        name: str,
        query: dict[str, str],
        content_type: str | None,
        body: Any,
    ) -> tuple[int, dict]:
        if content_type != APPLY:
            raise _ApiError(415, "UnsupportedMediaType", f"the fake only serves {APPLY} patches, not {content_type}")
        manager = query.get("fieldManager")
        if not manager:
            raise _ApiError(400, "BadRequest", "fieldManager is required for apply requests")
        dry_run = query.get("dryRun")
        if dry_run not in (None, "All"):
            raise _ApiError(400, "BadRequest", f"unsupported dryRun value {dry_run!r}")
        if not isinstance(body, dict):
            raise _ApiError(400, "BadRequest", "the apply body is not an object")
        meta = body.get("metadata") or {}
        if body.get("apiVersion") != group_version or body.get("kind") != kind.kind:
            raise _ApiError(400, "BadRequest", f"{body.get('apiVersion')}/{body.get('kind')} sent to {kind.plural}")
        if meta.get("name") != name:
            raise _ApiError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match {name}")
        if namespace and meta.get("namespace") not in (None, namespace):
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        rejection = self._rejections.get((kind.kind, name))
        if rejection:
            raise _ApiError(*rejection, {"name": name, "kind": kind.plural})

        key = (group_version, kind.plural, namespace, name)
        stored = self.objects.get(key)
        applied = {**(stored.applied if stored else {}), manager: copy.deepcopy(body)}
        merged: dict = {}
        for config in applied.values():
            merged = _merge(merged, config)
        merged.setdefault("metadata", {})
        if namespace:
            merged["metadata"]["namespace"] = namespace
        for key_ in _SERVER_META:
            merged["metadata"].pop(key_, None)

        if stored is None:
            merged["metadata"].update(
                uid=str(uuid.uuid4()),
                creationTimestamp=CREATED_AT,
                generation=1,
                managedFields=[_managed(manager, group_version)],
            )
            if dry_run:
                return 201, merged
            merged["metadata"]["resourceVersion"] = str(next(self._versions))
            self.objects[key] = _Stored(merged, applied)
            return 201, copy.deepcopy(merged)

        old = stored.obj
        old_content = {**old, "metadata": {k: v for k, v in old["metadata"].items() if k not in _SERVER_META}}
        if merged == old_content:
            if not dry_run:
                stored.applied = applied
            return 200, copy.deepcopy(old)
        spec_changed = {k: v for k, v in merged.items() if k != "metadata"} != {
            k: v for k, v in old_content.items() if k not in ("metadata", "status")
        }
        server_meta = {k: old["metadata"][k] for k in _SERVER_META if k in old["metadata"]}
        managers = [m for m in server_meta.get("managedFields", []) if m["manager"] != manager]
        server_meta["managedFields"] = [*managers, _managed(manager, group_version)]
        server_meta["generation"] = server_meta.get("generation", 1) + int(spec_changed)
        if dry_run:  # a dry run writes nothing, so resourceVersion stays what it was (as the real server does)
            return 200, {**merged, "metadata": {**merged["metadata"], **server_meta}}
        server_meta["resourceVersion"] = str(next(self._versions))
        new = {**merged, "metadata": {**merged["metadata"], **server_meta}}
        if "status" in old:
            new["status"] = old["status"]
        self.objects[key] = _Stored(new, applied)
        return 200, copy.deepcopy(new)


def _managed(manager: str, api_version: str) -> dict:
    return {"manager": manager, "operation": "Apply", "apiVersion": api_version, "fieldsType": "FieldsV1"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeApi
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall each

    def _serve(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type")
        try:
            body = yaml.safe_load(raw) if raw else None  # JSON is YAML: the apply body may be either
        except yaml.YAMLError:
            body = raw.decode(errors="replace")
        request = Request(self.command, url.path, query, content_type, self.headers.get("Authorization"), body)
        with self.fake._lock:
            self.fake.requests.append(request)
        try:
            code, answer = self.fake.handle(self.command, url.path, query, content_type, body)
        except _ApiError as err:
            code, answer = err.code, err.body
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
        pass
