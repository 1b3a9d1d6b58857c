"""Checks for rendered Kubernetes objects, without a cluster: what an API server, KServe/Argo and an admission
controller enforcing the *restricted* Pod Security Standard would say, plus the project's own hardening bar.

- :func:`validate_core`: built-in kinds against Kubernetes' OpenAPI schemas (``kubernetes-validate``, strict:
  an unknown field is an error, as with ``kubectl apply --validate=strict``); other kinds go to
- :func:`validate_crd`: custom resources against the vendored ``openAPIV3Schema`` of their CRD (``crds/``),
  read as the API server reads a structural schema: unknown fields fail except under
  ``x-kubernetes-preserve-unknown-fields``;
- :func:`validate_models`: the same objects through the SDKs the builders use (KServe, Hera), which must take
  them without dropping or changing anything;
- :func:`assert_pss_restricted` and :func:`assert_hardened`: every pod the object makes, field by field;
- :func:`checkov_scan`: checkov from its own venv (``make tools``), on the objects and on the pods they make.

Each check raises :class:`CheckError` (an ``AssertionError``) listing every :class:`Finding`; the
``*_findings`` functions return them instead, for reports.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import functools
import json
import re
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client.models as k8s_models
import kubernetes_validate
import yaml
from referencing import Registry, Resource

__all__ = [
    "CRD_SCHEMAS",
    "DEFAULT_KUBE_VERSION",
    "CheckError",
    "CheckovFailure",
    "Container",
    "Finding",
    "PodView",
    "assert_hardened",
    "assert_pss_restricted",
    "checkov_scan",
    "core_findings",
    "crd_findings",
    "hardening_findings",
    "kube_versions",
    "load_objects",
    "model_findings",
    "pod_views",
    "pss_findings",
    "validate_core",
    "validate_crd",
    "validate_models",
]

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = Path(__file__).resolve().parent / "crds"
CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"
#: A current release that kubernetes-validate ships strict schemas for (it has 1.30 to 1.37).
DEFAULT_KUBE_VERSION = "1.33"
#: checkov checks that do not fit this stack, each with why (the report lists them again).
CHECKOV_SKIPS = {
    "CKV_K8S_15": "imagePullPolicy Always makes every pod start depend on the registry; images are pinned "
    "(assert_hardened refuses latest and untagged)",
    "CKV_K8S_43": "cluster.image is a release tag the deployer sets; a digest is their choice (image@sha256:...)",
    "CKV_K8S_35": "boto3/minio, Feast's Redis and KServe's storage initializer read credentials from env vars",
}

#: (apiVersion, kind) -> the vendored schema (crds/README.md names each one's source).
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.v1beta1.json",
    ("argoproj.io/v1alpha1", "CronWorkflow"): "argoproj.io_cronworkflows.v1alpha1.json",
    ("argoproj.io/v1alpha1", "Workflow"): "argoproj.io_workflows.v1alpha1.json",
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.v1.json",
}
#: kubernetes-validate's schemas (OpenAPI v2 of each release as JSON Schema; -strict: additionalProperties false).
_CORE_SCHEMAS = Path(kubernetes_validate.__file__).resolve().parent / "kubernetes-json-schema"
_OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    """One failure: which check, which object, where in it (a field path), and what is wrong."""

    check: str
    kind: str
    name: str
    path: str
    message: str
    container: str | None = None

    def __str__(self) -> str:
        where = f" container {self.container}" if self.container else ""
        return f"{self.kind}/{self.name}{where}: {self.path}: {self.message}"


class CheckError(AssertionError):
    """Every finding of one check at once (fixing one at a time through CI is slow)."""

    def __init__(self, check: str, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        lines = "\n".join(f"  {f}" for f in self.findings)
        super().__init__(f"{check}: {len(self.findings)} failure(s)\n{lines}")


def _raise(check: str, findings: list[Finding]) -> None:
    if findings:
        raise CheckError(check, findings)


def _ident(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind", "?")), str(meta.get("name") or meta.get("generateName") or "?")


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def load_objects(source: Path | str) -> list[dict[str, Any]]:
    """The objects in a YAML file, a directory of them (recursively, e.g. ``helm template --output-dir``), or a
    YAML text; empty documents (a template that rendered nothing) are skipped."""
    if isinstance(source, Path) or ("\n" not in source and Path(source).exists()):
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
        return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]
    return [doc for doc in yaml.safe_load_all(source) if doc]


# ------------------------------------------------------------------------------------------- schema validation


def _check_int(bits: int) -> Any:
    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)

    return check


def _check_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _check_byte(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return True


def _format_checker() -> jsonschema.FormatChecker:
    """The OpenAPI formats the API server checks (jsonschema knows none of int32/int64/byte by default)."""
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("int32")(_check_int(32))
    checker.checks("int64")(_check_int(64))
    checker.checks("date-time")(_check_date_time)
    checker.checks("byte")(_check_byte)
    return checker


def _list_type(validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    """``x-kubernetes-list-type``: a ``set`` has no duplicates, a ``map`` no two items with the same keys (the
    API server rejects both; a strategic merge would silently keep one)."""
    if not validator.is_type(instance, "array") or list_type not in {"set", "map"}:
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    props = (schema.get("items") or {}).get("properties") or {}
    seen: dict[str, int] = {}
    for i, item in enumerate(instance):
        if list_type == "map" and isinstance(item, dict):
            ident = json.dumps([item.get(k, props.get(k, {}).get("default")) for k in keys])
            what = ", ".join(f"{k}={item.get(k, props.get(k, {}).get('default'))}" for k in keys)
        else:
            ident, what = json.dumps(item, sort_keys=True), repr(item)
        if ident in seen:
            yield jsonschema.ValidationError(f"duplicate of item [{seen[ident]}] ({what})", path=[i])
        seen.setdefault(ident, i)


_KEYWORDS = {"x-kubernetes-list-type": _list_type}
_CoreValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, _KEYWORDS)
_CrdValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, _KEYWORDS)


def _findings(check: str, obj: Mapping[str, Any], errors: Iterable[jsonschema.ValidationError]) -> list[Finding]:
    """Schema errors as findings, an unknown field named in the path (``additionalProperties: false``), an
    ``anyOf``/``oneOf`` miss by its closest branch."""
    kind, name = _ident(obj)
    out: list[Finding] = []
    for error in errors:
        if error.context:
            error = jsonschema.exceptions.best_match(error.context)  # noqa: PLW2901
        parts = list(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - known):
                out.append(Finding(check, kind, name, _path([*parts, extra]), "unknown field"))
            continue
        out.append(Finding(check, kind, name, _path(parts), error.message))
    return sorted(set(out), key=lambda f: (f.path, f.message))


def kube_versions() -> list[str]:
    """The Kubernetes minor versions the installed kubernetes-validate has strict schemas for, oldest first."""
    found = {
        m.group(1) for d in _CORE_SCHEMAS.iterdir() if (m := re.fullmatch(r"v(\d+\.\d+)\.\d+-local-strict", d.name))
    }
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


@functools.cache
def _core_dir(kube_version: str) -> Path:
    """The strict schema folder of exactly ``kube_version`` (kubernetes-validate would silently fall back)."""
    for d in _CORE_SCHEMAS.iterdir():
        if re.fullmatch(rf"v{re.escape(kube_version)}\.\d+-local-strict", d.name):
            return d
    raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kube_version}; it has {kube_versions()}")


@functools.cache
def _core_registry(kube_version: str) -> Registry:
    defs = json.loads((_core_dir(kube_version) / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@functools.cache
def _core_validator(kube_version: str, api_version: str, kind: str) -> Any | None:
    # kubernetes-validate's file names: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    file = f"{kind.lower()}-{group_version}.json"
    schema_file = _core_dir(kube_version) / file
    if not schema_file.is_file():
        return None
    schema = json.loads(schema_file.read_text())
    return _CoreValidator(schema, registry=_core_registry(kube_version), format_checker=_format_checker())


def _is_builtin(api_version: str) -> bool:
    """Built-in API groups: the core group, dotless groups (apps, batch, policy, ...) and ``*.k8s.io``."""
    group = api_version.rpartition("/")[0]
    return not group or "." not in group or group.endswith(".k8s.io")


def core_findings(obj: Mapping[str, Any], kube_version: str = DEFAULT_KUBE_VERSION) -> list[Finding]:
    """:func:`validate_core` for one built-in object, as findings."""
    kind, name = _ident(obj)
    validator = _core_validator(kube_version, str(obj.get("apiVersion")), kind)
    if validator is None:
        msg = f"Kubernetes {kube_version} has no {obj.get('apiVersion')} {kind}"
        return [Finding("core-schema", kind, name, "apiVersion", msg)]
    return _findings("core-schema", obj, validator.iter_errors(obj)) + _metadata_findings("core-schema", obj)


def validate_core(
    objects: Iterable[Mapping[str, Any]],
    kube_version: str = DEFAULT_KUBE_VERSION,
    *,
    unchecked_kinds: Collection[str] = (),
) -> dict[str, str]:
    """Every object valid for the API server of ``kube_version``: built-in kinds against Kubernetes' strict
    schemas, custom resources against their vendored CRD (:func:`validate_crd`). A kind with neither fails (a
    chart must not ship what nothing here checks) unless named in ``unchecked_kinds``, an explicit opt-out.
    Returns ``Kind/name`` -> what validated it."""
    checked: dict[str, str] = {}
    findings: list[Finding] = []
    for obj in objects:
        kind, name = _ident(obj)
        api_version = str(obj.get("apiVersion"))
        if _is_builtin(api_version):
            findings += core_findings(obj, kube_version)
            checked[f"{kind}/{name}"] = f"Kubernetes {kube_version} (strict)"
        elif (api_version, kind) in CRD_SCHEMAS:
            findings += crd_findings(obj, kube_version)
            checked[f"{kind}/{name}"] = f"CRD schema {CRD_SCHEMAS[api_version, kind]}"
        elif kind in unchecked_kinds:
            checked[f"{kind}/{name}"] = "not checked (unchecked_kinds)"
        else:
            msg = f"no schema for {api_version} {kind}: vendor its CRD (tests/deploy/crds/vendor.py)"
            findings.append(Finding("core-schema", kind, name, "kind", msg))
    _raise("schema validation", findings)
    return checked


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _qualified_name_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix {prefix!r} is not a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"name part {name!r} is not a qualified name (63 chars, alphanumeric, -_. inside)"
    return None


def _metadata_findings(check: str, obj: Mapping[str, Any]) -> list[Finding]:
    """What the API server checks in metadata that no OpenAPI schema says: name, namespace, label syntax."""
    kind, name = _ident(obj)
    meta = obj.get("metadata") or {}
    out: list[Finding] = []

    def bad(path: str, msg: str) -> None:
        out.append(Finding(check, kind, name, f"metadata.{path}", msg))

    if isinstance(meta.get("name"), str) and (len(meta["name"]) > 253 or not _DNS_SUBDOMAIN.fullmatch(meta["name"])):
        bad("name", f"{meta['name']!r} is not a DNS-1123 subdomain (253 chars, lowercase alphanumeric, -.)")
    if isinstance(meta.get("namespace"), str) and (
        len(meta["namespace"]) > 63 or not _DNS_LABEL.fullmatch(meta["namespace"])
    ):
        bad("namespace", f"{meta['namespace']!r} is not a DNS-1123 label")
    for key, value in (meta.get("labels") or {}).items():
        if problem := _qualified_name_problem(str(key)):
            bad(f"labels.{key}", f"key: {problem}")
        if isinstance(value, str) and value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            bad(f"labels.{key}", f"value {value!r} is not a label value (63 chars, alphanumeric, -_. inside)")
    for key in meta.get("annotations") or {}:
        if problem := _qualified_name_problem(str(key)):
            bad(f"annotations.{key}", f"key: {problem}")
    return out


def _structural(node: Any, *, branch: bool = False) -> Any:
    """A CRD schema as the API server applies it: an object schema without ``additionalProperties`` is closed
    (its unknown fields are pruned; strict field validation rejects them) unless it preserves unknown fields;
    ``x-kubernetes-int-or-string`` takes both; ``nullable`` allows null. ``anyOf`` etc. branches only add value
    checks, so they are not closed."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            out[key] = {k: _structural(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = _structural(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            out[key] = [_structural(x, branch=True) for x in node[key]]
    if isinstance(node.get("not"), dict):
        out["not"] = _structural(node["not"], branch=True)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if not branch and node.get("type") == "object" and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


@functools.cache
def _crd_schema(file: str) -> dict[str, Any]:
    schema = json.loads((CRD_DIR / file).read_text())
    schema.pop("$comment", None)
    schema = _structural(schema)
    # the root metadata is the API server's own ObjectMeta (crd_findings checks it as one), not pruned to {}
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


@functools.cache
def _crd_validator(file: str) -> Any:
    return _CrdValidator(_crd_schema(file), format_checker=_format_checker())


def crd_findings(obj: Mapping[str, Any], kube_version: str = DEFAULT_KUBE_VERSION) -> list[Finding]:
    """:func:`validate_crd` as findings."""
    kind, _ = _ident(obj)
    file = CRD_SCHEMAS.get((str(obj.get("apiVersion")), kind))
    if file is None:
        raise LookupError(f"no vendored CRD schema for {obj.get('apiVersion')} {kind}; have {sorted(CRD_SCHEMAS)}")
    findings = _findings("crd-schema", obj, _crd_validator(file).iter_errors(obj))
    meta_schema = {"$ref": _OBJECT_META}
    meta = _CoreValidator(meta_schema, registry=_core_registry(kube_version), format_checker=_format_checker())
    meta_errors = list(meta.iter_errors(obj.get("metadata", {})))
    for error in meta_errors:
        error.path.appendleft("metadata")
    return findings + _findings("crd-schema", obj, meta_errors) + _metadata_findings("crd-schema", obj)


def validate_crd(obj: Mapping[str, Any], kube_version: str = DEFAULT_KUBE_VERSION) -> None:
    """A custom resource (InferenceService, CronWorkflow, Workflow) valid against the ``openAPIV3Schema`` of the
    CRD version the project targets, vendored in ``crds/``: the SDKs' models can lag or lead the CRD installed
    on the cluster, and the CRD is what the API server enforces. Metadata is checked as ObjectMeta."""
    _raise("CRD schema validation", crd_findings(obj, kube_version))


# --------------------------------------------------------------------------------------------------- SDK models

#: (apiVersion, kind) -> the KServe SDK model class name.
_KSERVE_MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "InferenceGraph"): "V1alpha1InferenceGraph",
}
_ARGO_KINDS = {"CronWorkflow", "Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"}
_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float)}


def _kube_model(data: Any, type_name: str, path: list[Any], out: list[tuple[str, str]]) -> Any:
    """Build the OpenAPI-generated model (KServe's, the Kubernetes client's) of ``data`` the way
    ``ApiClient.deserialize`` does, but noting every key the model has no attribute for (the SDK would drop it)
    and every value of the wrong type (it would coerce it) instead of losing them."""
    import kserve.models as kserve_models  # tests/conftest.py imports kserve first (it parses sys.argv)

    if type_name.startswith("list["):
        if not isinstance(data, list):
            out.append((_path(path), f"expected a list ({type_name}), got {type(data).__name__}"))
            return None
        return [_kube_model(x, type_name[5:-1], [*path, i], out) for i, x in enumerate(data)]
    if match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        if not isinstance(data, dict):
            out.append((_path(path), f"expected a map ({type_name}), got {type(data).__name__}"))
            return None
        return {k: _kube_model(v, match.group(2), [*path, k], out) for k, v in data.items()}
    if type_name == "object" or (type_name == "ResourceQuantity" and isinstance(data, str | int | float)):
        return data  # a quantity is an int-or-string; KServe names a type for it the Kubernetes client lacks
    if type_name in {"datetime", "date"}:  # kept as the string the API server takes
        if not isinstance(data, str):
            out.append((_path(path), f"expected a {type_name} string, got {type(data).__name__}"))
        return data
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if not isinstance(data, allowed) or (type_name != "bool" and isinstance(data, bool)):
            out.append((_path(path), f"expected {type_name}, got {type(data).__name__} {data!r}"))
        return data
    cls = getattr(kserve_models, type_name, None) or getattr(k8s_models, type_name, None)
    if cls is None:
        out.append((_path(path), f"the SDK has no model {type_name}"))
        return data
    if not isinstance(data, dict):
        out.append((_path(path), f"expected an object ({type_name}), got {type(data).__name__}"))
        return None
    attrs = {key: attr for attr, key in cls.attribute_map.items()}
    for key in sorted(set(data) - set(attrs)):
        out.append((_path([*path, key]), f"unknown field ({type_name} has none; the SDK drops it)"))
    kwargs = {
        attrs[k]: _kube_model(v, cls.openapi_types[attrs[k]], [*path, k], out) for k, v in data.items() if k in attrs
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # client-side validation: required fields, enums
        out.append((_path(path), f"{type_name}: {exc}"))
        return None


def _diff(before: Any, after: Any, path: list[Any]) -> Iterator[tuple[str, str]]:
    """Where a round trip through a model changed the object: dropped, added or changed values."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before:
            if key not in after:
                yield _path([*path, key]), "unknown field (the model drops it)"
            else:
                yield from _diff(before[key], after[key], [*path, key])
        for key in after:
            if key not in before:
                yield _path([*path, key]), f"added by the model: {after[key]!r}"
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _diff(b, a, [*path, i])
    elif before != after or isinstance(before, bool) != isinstance(after, bool):
        yield _path(path), f"{before!r} becomes {after!r} through the model"
    elif type(before) is not type(after) and not {type(before), type(after)} <= {int, float}:
        yield _path(path), f"{before!r} ({type(before).__name__}) becomes {type(after).__name__}"


def model_findings(obj: Mapping[str, Any]) -> list[Finding]:
    """:func:`validate_models` as findings."""
    import pydantic
    from hera.workflows import models as hera_models
    from kubernetes.client import ApiClient

    kind, name = _ident(obj)
    api_version = str(obj.get("apiVersion"))
    problems: list[tuple[str, str]] = []
    if (api_version, kind) in _KSERVE_MODELS:
        model = _kube_model(obj, _KSERVE_MODELS[api_version, kind], [], problems)
        if not problems:
            problems += _diff(obj, ApiClient().sanitize_for_serialization(model), [])
    elif api_version.startswith("argoproj.io/") and kind in _ARGO_KINDS:
        # Hera's models ignore unknown keys (extra="ignore"): a lossless round trip shows there were none
        try:
            hera_model = getattr(hera_models, kind).model_validate(obj)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                problems.append((_path(err["loc"]), f"{err['msg']} (got {err.get('input')!r})"))
        else:
            problems += _diff(obj, hera_model.model_dump(by_alias=True, exclude_none=True, mode="json"), [])
    else:
        raise LookupError(f"no SDK model for {api_version} {kind}")
    return [Finding("model", kind, name, p, m) for p, m in dict.fromkeys(problems)]


def validate_models(obj: Mapping[str, Any]) -> None:
    """The object through the SDK models the builders and the deploy step use (KServe's
    ``V1beta1InferenceService`` with the Kubernetes client's types; Hera's Argo models): each must read it
    without an unknown key, a wrong type, or a value that changes on the way back out."""
    _raise("SDK model validation", model_findings(obj))


# ----------------------------------------------------------------------------------------------------- pod views

_WORKLOAD_TEMPLATE = {
    "Deployment": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "ReplicationController": "spec.template.spec",
    "Job": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
    "Pod": "spec",
}
#: Kinds whose pods serve until replaced: they need readiness and liveness probes.
_LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "InferenceService"}
_KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")
#: A component's single-container shorthands (the model server KServe picks from a runtime).
_KSERVE_MODEL_KEYS = (
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
    "huggingface",
    "art",
)
_POD_FIELDS = frozenset(k8s_models.V1PodSpec.attribute_map.values())
_CONTAINER_FIELDS = frozenset(k8s_models.V1Container.attribute_map.values())
#: Pod fields a view keeps apart (its containers, its volumes with their paths).
_NOT_POD_FIELDS = frozenset({"containers", "initContainers", "ephemeralContainers", "volumes"})
#: Pod-level fields an Argo template sets for its own pod, else the workflow's (``templateDefaults`` between).
_ARGO_POD_FIELDS = (
    "securityContext",
    "hostNetwork",
    "serviceAccountName",
    "automountServiceAccountToken",
    "nodeSelector",
    "tolerations",
    "affinity",
    "hostAliases",
    "schedulerName",
    "priorityClassName",
    "dnsPolicy",
    "dnsConfig",
    "imagePullSecrets",
    "podSpecPatch",
)


@dataclass(frozen=True)
class Container:
    """A container of a pod view: where it is in the object, its name, whether it is an init container."""

    path: str
    name: str
    spec: Mapping[str, Any]
    init: bool = False


@dataclass(frozen=True)
class PodView:
    """A pod an object makes, with each pod-level field's path in the object (Argo takes a template's field,
    else the workflow's): the checks name the field to change, not a merged copy of it."""

    kind: str
    name: str
    label: str  # which of the object's pods: "spec.predictor", "template drift-check"
    path: str  # where a pod-level field it lacks would go: "spec.predictor", "spec.workflowSpec.templates[0]"
    namespace: str | None
    fields: Mapping[str, tuple[str, Any]]  # pod field -> (path in the object, value); volumes excluded
    volumes: tuple[tuple[str, Mapping[str, Any]], ...]
    containers: tuple[Container, ...]
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    long_running: bool

    def get(self, field: str, default: Any = None) -> Any:
        return self.fields[field][1] if field in self.fields else default

    def where(self, field: str) -> str:
        return self.fields[field][0] if field in self.fields else f"{self.path}.{field}"

    def as_workload(self) -> dict[str, Any]:
        """The pod as a built-in workload for scanners that know no CRD: a Deployment when it serves (KServe
        makes one per component), a Job when it runs to completion (an Argo step), with the labels and
        annotations the pod gets, so a NetworkPolicy in the same scan selects it."""
        spec: dict[str, Any] = {k: v for k, (_, v) in self.fields.items() if k in _POD_FIELDS}
        if self.volumes:
            spec["volumes"] = [v for _, v in self.volumes]
        for key, init in (("initContainers", True), ("containers", False)):
            items = [
                {"name": c.name} | {k: v for k, v in c.spec.items() if k in _CONTAINER_FIELDS}
                for c in self.containers
                if c.init is init
            ]
            if items:
                spec[key] = items
        suffix = re.sub(r"[^a-z0-9-]+", "-", self.label.removeprefix("spec.").lower()).strip("-")
        meta: dict[str, Any] = {
            "name": f"{self.name}--{suffix}",
            "annotations": {"kfloop.io/derived-from": f"{self.kind}/{self.name} {self.label}"},
        }
        if self.namespace:
            meta["namespace"] = self.namespace
        template = {"metadata": {"labels": dict(self.labels), "annotations": dict(self.annotations)}, "spec": spec}
        if self.long_running:
            body = {"selector": {"matchLabels": dict(self.labels)}, "template": template}
            return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"template": template}}


def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _containers(spec: Mapping[str, Any], path: str) -> list[Container]:
    out = []
    for key, init in (("initContainers", True), ("containers", False), ("ephemeralContainers", False)):
        for i, c in enumerate(spec.get(key) or []):
            out.append(Container(f"{path}.{key}[{i}]", str(c.get("name", f"#{i}")), c, init))
    return out


def _pod_view(
    obj: Mapping[str, Any], spec: Mapping[str, Any], path: str, containers: list[Container], **kw: Any
) -> PodView:
    kind, name = _ident(obj)
    fields = {k: (f"{path}.{k}", v) for k, v in spec.items() if k in _POD_FIELDS and k not in _NOT_POD_FIELDS}
    fields |= {k: (f"{path}.{k}", v) for k, v in spec.items() if k == "podSpecPatch"}
    volumes = tuple((f"{path}.volumes[{i}]", v) for i, v in enumerate(spec.get("volumes") or []))
    namespace = (obj.get("metadata") or {}).get("namespace")
    defaults = {"label": path, "annotations": {}, "labels": {}, "long_running": kind in _LONG_RUNNING}
    return PodView(
        kind,
        name,
        path=path,
        namespace=namespace,
        fields=fields,
        volumes=volumes,
        containers=tuple(containers),
        **(defaults | kw),
    )


def _kserve_views(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """Each component's pod: its PodSpec fields are inline in the component, next to KServe's own."""
    spec = obj.get("spec") or {}
    for comp in _KSERVE_COMPONENTS:
        body = spec.get(comp)
        if not isinstance(body, dict):
            continue
        path = f"spec.{comp}"
        containers = _containers(body, path)
        for key in _KSERVE_MODEL_KEYS:
            if isinstance(body.get(key), dict):
                containers.append(Container(f"{path}.{key}", "kserve-container", body[key]))
        labels = {"serving.kserve.io/inferenceservice": _ident(obj)[1], "component": comp, **(body.get("labels") or {})}
        yield _pod_view(obj, body, path, containers, annotations=body.get("annotations") or {}, labels=labels)
        if isinstance(body.get("workerSpec"), dict):
            worker = body["workerSpec"]
            yield _pod_view(obj, worker, f"{path}.workerSpec", _containers(worker, f"{path}.workerSpec"))


def _argo_views(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """Each template that runs our containers (container, script, containerSet; steps/dag/resource templates
    run none of ours): pod-level fields from the template, else ``templateDefaults``, else the workflow."""
    base = "spec.workflowSpec" if obj.get("kind") == "CronWorkflow" else "spec"
    wf = _dig(obj, base) or {}
    defaults = wf.get("templateDefaults") or {}
    for i, tmpl in enumerate(wf.get("templates") or []):
        tpath = f"{base}.templates[{i}]"
        label = f"template {tmpl.get('name', i)}"
        containers = [
            Container(f"{tpath}.{key}", str(tmpl[key].get("name") or "main"), tmpl[key])
            for key in ("container", "script")
            if isinstance(tmpl.get(key), dict)
        ]
        for j, c in enumerate((tmpl.get("containerSet") or {}).get("containers") or []):
            containers.append(Container(f"{tpath}.containerSet.containers[{j}]", str(c.get("name", j)), c))
        if not containers:
            continue
        for j, c in enumerate(tmpl.get("initContainers") or []):
            containers.append(Container(f"{tpath}.initContainers[{j}]", str(c.get("name", j)), c, init=True))
        for j, c in enumerate(tmpl.get("sidecars") or []):
            containers.append(Container(f"{tpath}.sidecars[{j}]", str(c.get("name", j)), c))
        fields: dict[str, tuple[str, Any]] = {}
        for key in _ARGO_POD_FIELDS:
            for source, where in ((tmpl, tpath), (defaults, f"{base}.templateDefaults"), (wf, base)):
                if key in source:
                    fields[key] = (f"{where}.{key}", source[key])
                    break
        volumes = [(f"{base}.volumes[{j}]", v) for j, v in enumerate(wf.get("volumes") or [])]
        volumes += [(f"{tpath}.volumes[{j}]", v) for j, v in enumerate(tmpl.get("volumes") or [])]
        meta = [wf.get("podMetadata") or {}, tmpl.get("metadata") or {}]
        annotations = {k: v for m in meta for k, v in (m.get("annotations") or {}).items()}
        labels = {k: v for m in meta for k, v in (m.get("labels") or {}).items()}
        kind, name = _ident(obj)
        yield PodView(
            kind,
            name,
            label,
            tpath,
            (obj.get("metadata") or {}).get("namespace"),
            fields,
            tuple(volumes),
            tuple(containers),
            annotations,
            labels,
            long_running=bool(tmpl.get("daemon")),
        )


def pod_views(obj: Mapping[str, Any]) -> list[PodView]:
    """Every pod template in the object: workloads' ``template.spec``, a Pod's spec, each InferenceService
    component, each Argo template that runs a container. Containers KServe or Argo inject themselves (storage
    initializer, queue-proxy, Argo's init/wait) are theirs to harden, not in the object, so not here."""
    kind = str(obj.get("kind"))
    if kind in _WORKLOAD_TEMPLATE:
        path = _WORKLOAD_TEMPLATE[kind]
        spec = _dig(obj, path) or {}
        meta_path = path.removesuffix(".spec") + ".metadata" if kind != "Pod" else "metadata"
        meta = _dig(obj, meta_path) or {}
        containers = _containers(spec, path)
        labels = meta.get("labels") or {}
        return [_pod_view(obj, spec, path, containers, annotations=meta.get("annotations") or {}, labels=labels)]
    if str(obj.get("apiVersion", "")).startswith("serving.kserve.io/") and kind == "InferenceService":
        return list(_kserve_views(obj))
    if str(obj.get("apiVersion", "")).startswith("argoproj.io/") and kind in _ARGO_KINDS:
        return list(_argo_views(obj))
    return []


# --------------------------------------------------------------------------------------------- Pod Security

#: Restricted: the only volume types allowed (everything else, hostPath first, is refused).
PSS_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
PSS_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_OK = frozenset({"RuntimeDefault", "Localhost"})


def pss_findings(obj: Mapping[str, Any]) -> list[Finding]:
    """:func:`assert_pss_restricted` as findings."""
    out: list[Finding] = []
    for view in pod_views(obj):
        out += _pss_pod(view)
    return out


def _pss_pod(view: PodView) -> list[Finding]:  # noqa: PLR0915 (one rule after another, as the standard lists them)
    out: list[Finding] = []

    def bad(path: str, msg: str, container: Container | None = None) -> None:
        label = f"{container.name} ({view.label})" if container else None
        out.append(Finding("pss-restricted", view.kind, view.name, path, msg, label))

    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if view.get(field):
            bad(view.where(field), "must be unset or false (host namespaces)")
    if "podSpecPatch" in view.fields:
        bad(view.where("podSpecPatch"), "podSpecPatch is not allowed: it can change anything in the pod unchecked")
    for path, vol in view.volumes:
        types = set(vol) - {"name"}
        for t in sorted(types - PSS_VOLUME_TYPES):
            bad(f"{path}.{t}", f"volume type {t} is not allowed (restricted: {', '.join(sorted(PSS_VOLUME_TYPES))})")
    psc = view.get("securityContext") or {}
    psc_path = view.where("securityContext")
    for i, sysctl in enumerate(psc.get("sysctls") or []):
        if sysctl.get("name") not in PSS_SAFE_SYSCTLS:
            bad(f"{psc_path}.sysctls[{i}]", f"sysctl {sysctl.get('name')} is not in the safe set")
    if psc.get("runAsUser") == 0:
        bad(f"{psc_path}.runAsUser", "must not be 0 (root)")
    if psc.get("runAsNonRoot") is False:
        bad(f"{psc_path}.runAsNonRoot", "must not be false")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        bad(f"{psc_path}.seccompProfile.type", f"{pod_seccomp} is not RuntimeDefault or Localhost")
    out += _common_context_findings(view, psc, psc_path, None)
    for key, value in view.annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            bad(f"annotations.{key}", f"AppArmor profile {value} is not runtime/default or localhost/*")

    for c in view.containers:
        sc = c.spec.get("securityContext") or {}
        sc_path = f"{c.path}.securityContext"
        if sc.get("privileged"):
            bad(f"{sc_path}.privileged", "must be unset or false", c)
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{sc_path}.allowPrivilegeEscalation", f"must be false (is {sc.get('allowPrivilegeEscalation')!r})", c)
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad(f"{sc_path}.capabilities.drop", f"must contain ALL (is {caps.get('drop')!r})", c)
        for cap in caps.get("add") or []:
            if cap != "NET_BIND_SERVICE":
                bad(f"{sc_path}.capabilities.add", f"{cap} may not be added (only NET_BIND_SERVICE)", c)
        if sc.get("runAsNonRoot") is False:
            bad(f"{sc_path}.runAsNonRoot", "must not be false", c)
        elif sc.get("runAsNonRoot") is not True and psc.get("runAsNonRoot") is not True:
            bad(f"{sc_path}.runAsNonRoot", f"must be true here or in {psc_path}", c)
        if sc.get("runAsUser") == 0:
            bad(f"{sc_path}.runAsUser", "must not be 0 (root)", c)
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in _SECCOMP_OK:
            bad(f"{sc_path}.seccompProfile.type", f"{seccomp} is not RuntimeDefault or Localhost", c)
        elif seccomp is None and pod_seccomp is None:
            bad(f"{sc_path}.seccompProfile.type", f"must be RuntimeDefault or Localhost here or in {psc_path}", c)
        if sc.get("procMount") not in {None, "Default"}:
            bad(f"{sc_path}.procMount", f"{sc['procMount']} is not Default", c)
        for i, port in enumerate(c.spec.get("ports") or []):
            if port.get("hostPort"):
                bad(f"{c.path}.ports[{i}].hostPort", f"must be unset or 0 (is {port['hostPort']})", c)
        out += _common_context_findings(view, sc, sc_path, c)
    return out


def _common_context_findings(
    view: PodView, sc: Mapping[str, Any], path: str, container: Container | None
) -> list[Finding]:
    """Rules for both pod and container security contexts: Windows HostProcess, SELinux, AppArmor."""
    label = f"{container.name} ({view.label})" if container else None
    out: list[Finding] = []

    def bad(field: str, msg: str) -> None:
        out.append(Finding("pss-restricted", view.kind, view.name, f"{path}.{field}", msg, label))

    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("windowsOptions.hostProcess", "must be unset or false")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES:
        bad("seLinuxOptions.type", f"{selinux['type']} is not an allowed SELinux type")
    for key in ("user", "role"):
        if selinux.get(key):
            bad(f"seLinuxOptions.{key}", "must be unset")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in _APPARMOR_OK:
        bad("appArmorProfile.type", f"{apparmor} is not RuntimeDefault or Localhost")
    return out


def assert_pss_restricted(obj: Mapping[str, Any]) -> None:
    """Every pod the object makes meets the *restricted* Pod Security Standard (the ``kubeflow`` namespace
    may enforce it: a refused pod shows up only as a ReplicaSet/workflow that never starts), field by field:
    no host namespaces/ports/paths, allowed volume types, not privileged, no privilege escalation, capabilities
    dropped (ALL; NET_BIND_SERVICE may be added), non-root and not UID 0, seccomp RuntimeDefault/Localhost,
    allowed SELinux/AppArmor/sysctls/procMount, no Argo ``podSpecPatch`` (it cannot be checked)."""
    _raise("Pod Security Standard (restricted)", pss_findings(obj))


# ------------------------------------------------------------------------------------------- project hardening


def _image_problem(image: Any) -> str | None:
    if not isinstance(image, str) or not image:
        return "no image"
    name, at, digest = image.partition("@")
    if at:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else f"malformed digest {digest!r}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag or digest (it pulls latest)"
    tag = last.rsplit(":", 1)[1]
    if not tag:
        return f"image {image} has an empty tag"
    if tag == "latest":
        return f"image {image} uses the tag latest"
    return None


def hardening_findings(obj: Mapping[str, Any]) -> list[Finding]:
    """:func:`assert_hardened` as findings."""
    return [f for view in pod_views(obj) for c in view.containers for f in _hardening_container(view, c)]


def _hardening_container(view: PodView, c: Container) -> list[Finding]:
    out: list[Finding] = []

    def bad(path: str, msg: str) -> None:
        out.append(Finding("hardened", view.kind, view.name, path, msg, f"{c.name} ({view.label})"))

    sc = c.spec.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        bad(f"{c.path}.securityContext.readOnlyRootFilesystem", "must be true (write to an emptyDir)")
    requirements = c.spec.get("resources") or {}
    for section in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if (requirements.get(section) or {}).get(res) in {None, ""}:
                bad(f"{c.path}.resources.{section}.{res}", "must be set")
    if view.long_running and not c.init:
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.spec.get(probe):
                bad(f"{c.path}.{probe}", "must be set on a long-running container")
    runtime_picks_image = c.path.rsplit(".", 1)[-1] in _KSERVE_MODEL_KEYS and "image" not in c.spec
    if not runtime_picks_image and (problem := _image_problem(c.spec.get("image"))):
        bad(f"{c.path}.image", problem)
    return out


def assert_hardened(obj: Mapping[str, Any]) -> None:
    """kfloop's own bar beyond the standard, for every container the object runs: a read-only root filesystem,
    cpu and memory requests and limits (the scheduler and the OOM killer need both), readiness and liveness
    probes on long-running containers (Deployments, InferenceService components; not Jobs, workflow steps or
    test pods), and an image pinned by a tag other than ``latest`` or by digest (a rollback must mean
    something)."""
    _raise("hardening", hardening_findings(obj))


# ---------------------------------------------------------------------------------------------------- checkov


@dataclass(frozen=True)
class CheckovFailure:
    """A failed checkov check: its id and name, checkov's resource id, and for a pod derived from a custom
    resource, which object and pod it stands for."""

    check_id: str
    check_name: str
    resource: str
    file: str
    derived_from: str | None = None

    def __str__(self) -> str:
        origin = f" (from {self.derived_from})" if self.derived_from else ""
        return f"{self.check_id} {self.resource}{origin}: {self.check_name}"


def _checkov_inputs(objects: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, str]:
    """Write the objects for checkov: built-in kinds as they are; for custom resources it cannot read
    (InferenceService, CronWorkflow: it knows neither), the pods they make (as a Deployment or a Job), and an
    Argo object's workflow spec as a Workflow (its argo_workflows framework reads only that kind). Returns
    derived file -> origin."""
    origins: dict[str, str] = {}
    for i, obj in enumerate(objects):
        kind, name = _ident(obj)
        stem = f"{i:03d}-{kind.lower()}-{re.sub(r'[^a-zA-Z0-9.-]+', '-', name)}"
        if _is_builtin(str(obj.get("apiVersion"))):
            (folder / f"{stem}.yaml").write_text(yaml.safe_dump(dict(obj), sort_keys=False))
            continue
        for j, view in enumerate(pod_views(obj)):
            file = f"{stem}-pod{j}.yaml"
            (folder / file).write_text(yaml.safe_dump(view.as_workload(), sort_keys=False))
            origins[file] = f"{kind}/{name} {view.label}"
        if kind in _ARGO_KINDS and str(obj.get("apiVersion", "")).startswith("argoproj.io/"):
            base = "spec.workflowSpec" if kind == "CronWorkflow" else "spec"
            wf = {
                "apiVersion": obj["apiVersion"],
                "kind": "Workflow",
                "metadata": copy.deepcopy(dict(obj.get("metadata") or {})),
                "spec": copy.deepcopy(_dig(obj, base) or {}),
            }
            file = f"{stem}-workflow.yaml"
            (folder / file).write_text(yaml.safe_dump(wf, sort_keys=False))
            origins[file] = f"{kind}/{name} {base}"
    return origins


def checkov_scan(
    target: Path | str | Iterable[Mapping[str, Any]],
    skip: Mapping[str, str] | None = None,
    *,
    checkov: Path = CHECKOV,
    timeout: float = 300,
) -> tuple[int, list[CheckovFailure]]:
    """Run checkov (``--framework kubernetes argo_workflows``) on the objects (a list, a YAML file or a folder)
    and on the pods their custom resources make; ``skip`` maps each skipped check id to why it does not apply
    (a reason is required: an unexplained skip is how a real finding disappears). Returns the passed count and
    the failed checks. checkov lives in its own venv (``make tools``): it pins old boto3/packaging/networkx."""
    skip = dict(skip or {})
    if blank := [cid for cid, why in skip.items() if not why.strip()]:
        raise ValueError(f"checkov skips need a justification: {blank}")
    if not checkov.exists():
        raise FileNotFoundError(f"{checkov} is missing: run `make tools`")
    objects = load_objects(target) if isinstance(target, Path | str) else list(target)
    with tempfile.TemporaryDirectory(prefix="kfloop-checkov-") as tmp:
        origins = _checkov_inputs(objects, Path(tmp))
        cmd = [str(checkov), "--framework", "kubernetes", "argo_workflows", "-d", tmp, "-o", "json"]
        cmd += ["--skip-download", "--compact"]
        if skip:
            cmd += ["--skip-check", ",".join(skip)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"checkov failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        ) from exc
    reports = data if isinstance(data, list) else [data]
    passed, failed = 0, []
    for report in reports:
        results = report.get("results") or {}
        passed += len(results.get("passed_checks") or [])
        for check in results.get("failed_checks") or []:
            file = Path(str(check.get("file_path", ""))).name
            failed.append(
                CheckovFailure(
                    str(check["check_id"]),
                    str(check.get("check_name", "")),
                    str(check.get("resource", "")),
                    file,
                    origins.get(file),
                )
            )
    return passed, sorted(failed, key=lambda f: (f.check_id, f.resource))
