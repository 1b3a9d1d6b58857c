"""Server-side apply of rendered objects with the kubernetes client (``kfloop deploy``, ``kfloop schedules apply``).

Each object is sent as ``PATCH`` with ``Content-Type: application/apply-patch+yaml``, ``fieldManager=kfloop`` and
``force=true``: the API server merges it, owns the fields for kfloop, and takes over fields another manager (a
``kubectl edit``) changed, so the cluster ends up as rendered. Why server-side apply: it is idempotent without a
``last-applied`` annotation, and the API server leaves ``resourceVersion`` alone when an apply changes nothing, so
comparing it before (a ``GET``; 404 means the object is new) and after says created / configured / unchanged: a
second apply of the same objects reports 0 changed.

The resource path of a kind comes from API discovery of its ``apiVersion`` (``/api/v1``, ``/apis/<group>/<version>``),
not from a table here, so any kind the cluster serves can be applied. Every object is resolved before the first
write: a kind the cluster does not know (KServe or Argo Workflows not installed) fails naming the kind and the
prerequisite to install, with nothing applied. Objects are applied in dependency order (Helm's install order:
Namespaces, then ServiceAccounts, Secrets, ConfigMaps, RBAC, Services, then workloads, custom resources last).
Objects no longer rendered are not deleted (no pruning).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import yaml

from kfloop.errors import DeployError
from kfloop.yaml_text import BlockDumper

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "APPLY_CONTENT_TYPE",
    "FIELD_MANAGER",
    "Action",
    "ApplyReport",
    "ApplyResult",
    "api_message",
    "apply_objects",
    "order_objects",
    "to_yaml",
]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
FIELD_MANAGER = "kfloop"
#: (connect, read) seconds for each request: a hung API server fails the command instead of hanging it.
REQUEST_TIMEOUT = (10, 60)

#: created / configured (changed) / unchanged; ``skipped``: a client-side dry run, nothing was sent.
Action = Literal["created", "configured", "unchanged", "skipped", "kept"]

#: Helm's install order (pkg/release/util/kind_sorter.go); kinds not named here (custom resources) come last.
INSTALL_ORDER = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_RANK = {kind: i for i, kind in enumerate(INSTALL_ORDER)}

#: What to install when the cluster does not serve an API group (its CRDs are missing).
PREREQUISITES = {
    "serving.kserve.io": "KServe (its CRDs and controller)",
    "argoproj.io": "Argo Workflows (Kubeflow Pipelines ships it; its CRDs include CronWorkflow)",
    "monitoring.coreos.com": "the Prometheus Operator CRDs (e.g. kube-prometheus-stack), or turn the chart's "
    "ServiceMonitor/PrometheusRule off",
    "kubeflow.org": "Kubeflow Pipelines",
    "networking.istio.io": "Istio",
    "security.istio.io": "Istio",
    "cert-manager.io": "cert-manager",
}


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did to one object."""

    api_version: str
    kind: str
    name: str
    namespace: str | None  # None: cluster-scoped (or not known, in a client-side dry run)
    action: Action

    @property
    def ref(self) -> str:
        """``Kind/name``, as kubectl names objects."""
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ApplyReport:
    """Every object in apply order with its outcome, and the YAML of what was (or would be) sent."""

    results: tuple[ApplyResult, ...]
    manifest: str
    dry_run: Literal["client", "server"] | None = None

    def count(self, action: Action) -> int:
        return sum(r.action == action for r in self.results)

    @property
    def changed(self) -> int:
        """Objects created or configured (would be, in a server-side dry run)."""
        return self.count("created") + self.count("configured")

    def totals(self) -> str:
        """One line: ``7 objects: 2 created, 1 configured, 4 unchanged``."""
        n = len(self.results)
        if self.dry_run == "client":
            return f"{n} object{'s' * (n != 1)}: not applied (dry run)"
        shown = ("created", "configured", "unchanged") + (("kept",) if self.count("kept") else ())
        counts = ", ".join(f"{self.count(a)} {a}" for a in shown)
        return f"{n} object{'s' * (n != 1)}: {counts}" + (" (server dry run)" if self.dry_run else "")


@dataclass(frozen=True)
class _Resource:
    """A kind as discovery lists it: where its objects live."""

    plural: str
    namespaced: bool


# --- objects --------------------------------------------------------------------------------------
def _identity(obj: Any, index: int) -> tuple[str, str, str]:
    """``(apiVersion, kind, name)`` of a rendered object, or a DeployError naming what is missing."""
    if not isinstance(obj, dict):
        raise DeployError(f"object #{index + 1} is not a mapping but {type(obj).__name__}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    name = (obj.get("metadata") or {}).get("name")
    for key, value in (("apiVersion", api_version), ("kind", kind), ("metadata.name", name)):
        if not isinstance(value, str) or not value:
            raise DeployError(f"object #{index + 1} ({kind or '?'}/{name or '?'}) has no {key}")
    return api_version, kind, name  # type: ignore[return-value]


def order_objects(objects: Iterable[dict]) -> list[dict]:
    """``objects`` in apply order (Helm's install order by kind, custom resources last); stable within a kind."""
    return sorted(objects, key=lambda o: _RANK.get(str(o.get("kind")), len(_RANK)))


def to_yaml(objects: Sequence[dict]) -> str:
    """The objects as one multi-document YAML stream (``kubectl apply -f -`` reads it)."""
    return yaml.dump_all(objects, Dumper=BlockDumper, sort_keys=False, explicit_start=True)


# --- the API --------------------------------------------------------------------------------------
def api_message(err: Exception) -> str:
    """The API server's own message (its JSON ``Status``), else the status line or the exception."""
    body = getattr(err, "body", None)
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        status, reason = getattr(err, "status", None), getattr(err, "reason", None)
        return f"{status} {reason}" if status else f"{type(err).__name__}: {err}"


def _request(
    api: ApiClient, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: dict | None = None
) -> dict:
    """One call to the API server; its JSON answer. Raises ``ApiException`` on a non-2xx status."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = APPLY_CONTENT_TYPE  # the client sends the dict as JSON, which is YAML
    response = api.call_api(
        path,
        method,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=REQUEST_TIMEOUT,
    )
    data = response.data
    try:
        return json.loads(data) if data else {}
    except ValueError as err:  # a proxy's HTML page, say: not the API server
        raise DeployError(f"{method} {path}: the answer is not the API server's JSON: {data[:120]!r}") from err


def _unreachable(api: ApiClient, err: Exception) -> DeployError:
    reason = getattr(err, "reason", None) or err
    return DeployError(f"the Kubernetes API at {api.configuration.host} is unreachable: {reason}")


def _group_path(api_version: str) -> str:
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


class _Discovery:
    """The kinds each group-version serves, asked once per group-version per apply (no cache file: a CRD
    installed a minute ago is seen)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._found: dict[str, dict[str, _Resource]] = {}

    def resource(self, api_version: str, kind: str) -> _Resource | None:
        from kubernetes.client.exceptions import ApiException

        if api_version not in self._found:
            path = _group_path(api_version)
            try:
                doc = _request(self._api, "GET", path)
            except ApiException as err:
                if err.status == 404:
                    return None
                raise DeployError(f"API discovery ({path}) failed: {api_message(err)}") from err
            self._found[api_version] = {
                r["kind"]: _Resource(r["name"], bool(r.get("namespaced")))
                for r in doc.get("resources") or ()
                if "/" not in r.get("name", "/")  # subresources (deployments/status) are not kinds
            }
        return self._found[api_version].get(kind)

    def served_versions(self, group: str) -> list[str]:
        """The versions the cluster serves of ``group`` (empty: the group is not installed)."""
        from kubernetes.client.exceptions import ApiException

        try:
            doc = _request(self._api, "GET", "/apis")
        except ApiException:
            return []
        for entry in doc.get("groups") or ():
            if entry.get("name") == group:
                return [v.get("version", "?") for v in entry.get("versions") or ()]
        return []


def _missing_kinds_error(missing: list[tuple[str, str]], discovery: _Discovery) -> DeployError:
    """One message for every kind the cluster does not serve, each with what to install."""
    parts = []
    for api_version, kind in missing:
        group, _, version = api_version.rpartition("/")
        what = f"{kind} ({api_version})"
        if not group:
            parts.append(f"{what}: the API server does not serve it (is the apiVersion right?)")
            continue
        served = discovery.served_versions(group)
        install = PREREQUISITES.get(group, f"the CRD that defines {kind}")
        if served and version not in served:
            parts.append(
                f"{what}: the cluster serves {group} only as {', '.join(served)}; install a version of "
                f"{install} that serves {version}"
            )
        elif served:
            parts.append(f"{what}: the cluster serves {api_version} but not this kind; install {install}")
        else:
            parts.append(f"{what}: the cluster has no CRD for it; install {install} first")
    return DeployError(f"unknown kind{'s' * (len(parts) > 1)}, nothing applied: " + "; ".join(parts))


def _object_path(api_version: str, resource: _Resource, name: str, namespace: str | None) -> str:
    base = _group_path(api_version)
    where = f"/namespaces/{quote(namespace, safe='')}" if resource.namespaced and namespace else ""
    return f"{base}{where}/{resource.plural}/{quote(name, safe='')}"


def _content(obj: dict) -> dict:
    """An object without the fields the server changes on every write (for a server-side dry run's verdict)."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    for key in ("managedFields", "resourceVersion"):
        meta.pop(key, None)
    return out


@dataclass(frozen=True)
class _Planned:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    resource: _Resource
    body: dict

    @property
    def where(self) -> str:
        return f"{self.kind}/{self.name}" + (f" in namespace {self.namespace!r}" if self.namespace else "")


def _plan(api: ApiClient, objects: list[dict], namespace: str | None) -> list[_Planned]:
    """Resolve every object's resource through discovery before anything is written."""
    discovery = _Discovery(api)
    planned, missing, seen = [], [], set()
    for i, obj in enumerate(objects):
        api_version, kind, name = _identity(obj, i)
        resource = discovery.resource(api_version, kind)
        if resource is None:
            if (api_version, kind) not in missing:
                missing.append((api_version, kind))
            continue
        body = copy.deepcopy(obj)
        ns = None
        if resource.namespaced:
            ns = body["metadata"].get("namespace") or namespace
            if not ns:
                raise DeployError(f"{kind}/{name}: no namespace (set metadata.namespace or pass a namespace)")
            body["metadata"]["namespace"] = ns
        key = (api_version.rpartition("/")[0], kind, ns, name)
        if key in seen:
            raise DeployError(f"{kind}/{name} is rendered twice" + (f" in namespace {ns!r}" if ns else ""))
        seen.add(key)
        planned.append(_Planned(api_version, kind, name, ns, resource, body))
    if missing:
        raise _missing_kinds_error(missing, discovery)
    return planned


def _apply_one(
    api: ApiClient, item: _Planned, field_manager: str, server_dry_run: bool, keep_live: Collection[str] = ()
) -> Action:
    from kubernetes.client.exceptions import ApiException

    path = _object_path(item.api_version, item.resource, item.name, item.namespace)
    query = [("fieldManager", field_manager), ("force", "true")]
    if server_dry_run:
        query.append(("dryRun", "All"))
    step = "read"
    try:
        try:
            before: dict | None = _request(api, "GET", path)
        except ApiException as err:
            if err.status != 404:
                raise
            before = None
        if before is not None and item.kind in keep_live:
            return "kept"
        step = "apply"
        after = _request(api, "PATCH", path, query=query, body=item.body)
    except ApiException as err:
        raise DeployError(
            f"{item.where}: the API server refused to {step} it ({err.status} {err.reason}): {api_message(err)}"
        ) from err
    if before is None:
        return "created"
    if server_dry_run:  # a dry run never writes, so resourceVersion stays: compare the content instead
        return "unchanged" if _content(before) == _content(after) else "configured"
    rv_before = (before.get("metadata") or {}).get("resourceVersion")
    rv_after = (after.get("metadata") or {}).get("resourceVersion")
    return "unchanged" if rv_before is not None and rv_before == rv_after else "configured"


def apply_objects(
    objects: Sequence[dict],
    *,
    namespace: str | None,
    field_manager: str = FIELD_MANAGER,
    dry_run: bool = False,
    server_dry_run: bool = False,
    api_client: ApiClient | None = None,
    keep_live: Collection[str] = (),
) -> ApplyReport:
    """Server-side apply ``objects`` in dependency order; what happened to each one.

    ``namespace`` is used for namespaced objects without ``metadata.namespace`` (one that names its own keeps
    it). ``dry_run`` contacts nothing: every result is ``skipped`` and ``manifest`` holds the YAML that would be
    sent. ``server_dry_run`` sends every apply with ``dryRun=All``: the API server validates it (admission
    included) and the actions say what would happen; nothing is stored. ``api_client`` defaults to
    :func:`connect` (kubeconfig, else the pod's service account). An object of a kind in ``keep_live`` that
    already exists is ``kept`` as it is (the InferenceService: the pipeline's deploy step moves its version).
    Failures are :class:`DeployError`.
    """
    if dry_run and server_dry_run:
        raise ValueError("dry_run and server_dry_run exclude each other")
    ordered = order_objects(objects)
    if dry_run:
        results = []
        for i, obj in enumerate(ordered):
            api_version, kind, name = _identity(obj, i)
            ns = (obj.get("metadata") or {}).get("namespace")
            results.append(ApplyResult(api_version, kind, name, ns, "skipped"))
        return ApplyReport(tuple(results), to_yaml(ordered), dry_run="client")

    from urllib3.exceptions import HTTPError

    from kfloop.kube.connect import connect

    api = api_client or connect()
    try:
        planned = _plan(api, ordered, namespace)
        results = [
            ApplyResult(
                p.api_version, p.kind, p.name, p.namespace, _apply_one(api, p, field_manager, server_dry_run, keep_live)
            )
            for p in planned
        ]
    except (HTTPError, OSError) as err:
        raise _unreachable(api, err) from err
    finally:
        if api_client is None:
            api.close()
    manifest = to_yaml([p.body for p in planned])
    return ApplyReport(tuple(results), manifest, dry_run="server" if server_dry_run else None)
