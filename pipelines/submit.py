"""Submitting the compiled training pipeline to Kubeflow Pipelines (``kfloop submit``), idempotently.

Identity. The pipeline is the one the package names (``<project>-training``, as compiled from the config).
A version is named ``<pipeline>-<hash12>``: the first 12 hex digits of the sha256 of the package's pipeline
documents (parsed, so comments and formatting do not count: the header ``kfloop compile`` writes names the
config path it was given). Submitting the same package again finds that version and reuses it; a changed
package adds a version. ``kfp.Client.upload_pipeline`` would create the pipeline *with* a first version named
like the pipeline, so the pipeline is created empty (``POST /pipelines``) and every version, the first too,
is uploaded by name (``upload_version``). Two submitters racing both miss the other's write and one gets 409
AlreadyExists from the server (names are unique per namespace, version names per pipeline): it re-lists and
reuses what the other created. A run is new on every submission (a run is an event, not a resource).

Connection: :mod:`kfloop.pipelines.kfp_client`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kfloop.config import Config, config_to_json
from kfloop.config.run_parameters import NAMES, apply_run_parameters, parse_run_parameter, run_parameter_defaults
from kfloop.errors import ConfigError, PipelineError
from kfloop.pipelines.kfp_client import kfp_api_errors, kfp_client, kfp_quiet, ui_base

if TYPE_CHECKING:
    from kfp import Client

#: Hex digits of the package hash in a version name.
HASH_LENGTH = 12
#: Run states after which a run changes no more (kfp_server_api.V2beta1RuntimeState).
FINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
_EQUALS = 1  # filter.proto Predicate.Operation EQUALS, as kfp.Client sends it


# --- the package ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """A compiled pipeline file and what identifies it."""

    path: Path
    pipeline_name: str
    digest: str  # sha256 (hex) of the parsed pipeline documents
    parameters: frozenset[str]  # the pipeline's input parameters

    @property
    def version_name(self) -> str:
        return f"{self.pipeline_name}-{self.digest[:HASH_LENGTH]}"


#: Where and how a package is submitted, not what it runs: left out of its version's content hash, so one pipeline
#: submitted through a port-forward and through the ingress is one version.
_CONNECTION_KEYS = ("kfp_host", "kfp_ui_host", "kfp_namespace", "kfp_auth", "kfp_ca_cert", "experiment")


def _without_connection(doc: Any) -> Any:
    """The package document with the connection settings blanked in every embedded config (``config_json``)."""
    if isinstance(doc, dict):
        return {k: _without_connection(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_without_connection(v) for v in doc]
    if isinstance(doc, str) and doc.startswith("{") and '"cluster"' in doc:
        try:
            config = json.loads(doc)
        except ValueError:
            return doc
        if isinstance(config, dict) and isinstance(config.get("cluster"), dict):
            config["cluster"] = {k: v for k, v in config["cluster"].items() if k not in _CONNECTION_KEYS}
            return json.dumps(config, sort_keys=True)
    return doc


def read_package(path: Path) -> Package:
    """Read a compiled pipeline YAML (``kfloop compile``'s output): its name, content hash and parameters."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--package {path}: no such file (`kfloop compile` writes one)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read the pipeline package: {err}") from err
    try:
        docs = [doc for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if doc]
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not a compiled pipeline (invalid YAML): {err}") from err
    spec = docs[0] if docs and isinstance(docs[0], dict) else {}
    name = (spec.get("pipelineInfo") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{path}: not a compiled pipeline (no pipelineInfo.name); `kfloop compile` writes one")
    hashed = [_without_connection(doc) for doc in docs]
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    inputs = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return Package(Path(path), name, hashlib.sha256(canonical.encode()).hexdigest(), frozenset(inputs))


def run_arguments(config: Config, package: Package, params: list[str]) -> dict[str, Any]:
    """``--param NAME=VALUE`` items as typed run arguments: the run form's parameters
    (:mod:`kfloop.config.run_parameters`), ``source_uri`` and each attribute table's ``<table>_source_uri``.
    Checked now, naming the parameter, rather than in the run's first step on the cluster."""
    from kfloop.pipelines.training import table_uri_parameter  # the pipeline's imports are heavy: when needed

    uris = ["source_uri", *(table_uri_parameter(t.name) for t in config.features.tables)]
    arguments: dict[str, Any] = {}
    for item in params:
        name, eq, raw = item.partition("=")
        name = name.strip()
        if name in uris and eq:
            arguments[name] = raw.strip()
        elif name in NAMES:
            key, value = parse_run_parameter(item)
            arguments[key] = value
        else:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE with NAME one of {', '.join([*NAMES, *uris])}")
    typed = {k: v for k, v in arguments.items() if k in NAMES}
    if typed:
        apply_run_parameters(config_to_json(config), json.dumps(run_parameter_defaults(config)), typed)
    unknown = sorted(set(arguments) - package.parameters)
    if unknown:
        raise PipelineError(
            f"{package.path} has no parameter {', '.join(unknown)}: compile it again from this config "
            "(`kfloop submit` without --package does)"
        )
    return arguments


# --- pipeline, version, experiment, run -----------------------------------------------------------------------
def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": _EQUALS, "key": "name", "stringValue": name}]})


def _only(found: list[Any], what: str) -> Any:
    if len(found) > 1:
        raise PipelineError(f"Kubeflow Pipelines has {len(found)} of {what}; expected one")
    return found[0] if found else None


def _conflict(err: Exception) -> bool:
    return getattr(err, "status", None) == 409


def find_pipeline(client: Client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline named ``name`` in ``namespace`` (shared pipelines when None), if any."""
    result = client.list_pipelines(filter=_name_filter(name), namespace=namespace, page_size=2)
    found = _only(result.pipelines or [], f"pipeline {name!r}")
    return found.pipeline_id if found else None


def ensure_pipeline(client: Client, name: str, namespace: str | None, description: str) -> tuple[str, bool]:
    """The pipeline's id, created empty (no version) when missing; and whether this call created it."""
    import kfp_server_api

    found = find_pipeline(client, name, namespace)
    if found:
        return found, False
    body = kfp_server_api.V2beta1Pipeline(name=name, display_name=name, description=description, namespace=namespace)
    try:
        return client.pipelines.pipeline_service_create_pipeline(pipeline=body).pipeline_id, True
    except kfp_server_api.ApiException as err:
        found = find_pipeline(client, name, namespace) if _conflict(err) else None
        if not found:  # not a race lost: the server's own error
            raise
        return found, False


def find_version(client: Client, pipeline_id: str, name: str) -> str | None:
    """The id of the pipeline's version named ``name``, if any."""
    result = client.list_pipeline_versions(pipeline_id, filter=_name_filter(name), page_size=2)
    found = _only(result.pipeline_versions or [], f"version {name!r}")
    return found.pipeline_version_id if found else None


def ensure_version(client: Client, pipeline_id: str, package: Package) -> tuple[str, bool]:
    """The id of the package's version (named by its hash), uploaded when missing; and whether this call did."""
    import kfp_server_api

    found = find_version(client, pipeline_id, package.version_name)
    if found:
        return found, False
    try:
        with kfp_quiet():
            version = client.upload_pipeline_version(
                str(package.path),
                pipeline_version_name=package.version_name,
                pipeline_id=pipeline_id,
                description=f"sha256 {package.digest} (kfloop submit)",
            )
        return version.pipeline_version_id, True
    except kfp_server_api.ApiException as err:
        found = find_version(client, pipeline_id, package.version_name) if _conflict(err) else None
        if not found:
            raise
        return found, False


def ensure_experiment(client: Client, name: str, namespace: str | None) -> str:
    """The id of the experiment named ``name``, created when missing (a creation race lost is reused)."""
    import kfp_server_api

    try:
        try:
            with kfp_quiet():
                return client.create_experiment(name, namespace=namespace).experiment_id
        except kfp_server_api.ApiException as err:
            if not _conflict(err):
                raise
            return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
    except ValueError as err:  # kfp's own: several experiments of that name
        raise PipelineError(f"experiment {name!r}: {err}") from err


def wait_for_run(client: Client, run_id: str, timeout: float, poll: float = 5.0) -> Any:
    """Poll the run until it reaches a final state; the run (kfp_server_api.V2beta1Run)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "").upper()
        if state in FINAL_STATES:
            return run
        if time.monotonic() + poll > deadline:
            raise PipelineError(f"run {run_id} is still {state or 'pending'} after {timeout:g}s (it goes on)")
        time.sleep(poll)


@dataclass(frozen=True)
class Submission:
    """What one ``kfloop submit`` found, created and started."""

    ui: str  # base URL of the UI links
    pipeline_name: str
    pipeline_id: str
    pipeline_created: bool
    version_name: str
    version_id: str
    version_created: bool
    experiment: str | None = None
    experiment_id: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    run_state: str | None = None
    run_error: str | None = None

    @property
    def version_link(self) -> str:
        return f"{self.ui}/#/pipelines/details/{self.pipeline_id}/version/{self.version_id}"

    @property
    def run_link(self) -> str | None:
        return f"{self.ui}/#/runs/details/{self.run_id}" if self.run_id else None


def default_run_name(package: Package, now: datetime | None = None) -> str:
    return f"{package.pipeline_name}-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"


def submit(
    config: Config,
    package: Package,
    *,
    run: bool = True,
    run_name: str | None = None,
    arguments: dict[str, Any] | None = None,
    experiment: str | None = None,
    wait: float | None = None,
    poll: float = 5.0,
    on_started: Callable[[Submission], None] | None = None,
) -> Submission:
    """Upload ``package`` as a version of its pipeline (reusing an identical one) and, with ``run``, start a run
    of that version in ``experiment`` (default ``cluster.experiment``) with ``arguments``; ``wait`` seconds
    (if given) for it to end, after telling ``on_started`` what was submitted (the run's links while it runs). A
    run that ends other than SUCCEEDED is reported in the result, not raised."""
    from kfloop.pipelines.training import pipeline_name

    cluster = config.cluster
    expected = pipeline_name(config)
    if package.pipeline_name != expected:
        raise PipelineError(
            f"{package.path} is pipeline {package.pipeline_name!r}, this config's is {expected!r}: compile the "
            "package from this config (`kfloop submit` without --package does)"
        )
    client = kfp_client(cluster)
    namespace = cluster.kfp_namespace
    with kfp_api_errors(cluster, f"the upload of {package.version_name}"):
        pipeline_id, pipeline_created = ensure_pipeline(
            client, package.pipeline_name, namespace, f"kfloop training loop for {config.project}"
        )
        version_id, version_created = ensure_version(client, pipeline_id, package)
    result = Submission(
        ui_base(cluster),
        package.pipeline_name,
        pipeline_id,
        pipeline_created,
        package.version_name,
        version_id,
        version_created,
    )
    if not run:
        return result
    experiment = experiment or cluster.experiment
    run_name = run_name or default_run_name(package)
    with kfp_api_errors(cluster, f"the run {run_name!r}"):
        experiment_id = ensure_experiment(client, experiment, namespace)
        with kfp_quiet():
            started = client.run_pipeline(
                experiment_id, run_name, params=dict(arguments or {}), pipeline_id=pipeline_id, version_id=version_id
            )
        result = dataclasses.replace(
            result, experiment=experiment, experiment_id=experiment_id, run_name=run_name, run_id=started.run_id
        )
        if on_started is not None:
            on_started(result)
        if wait is not None:
            ended = wait_for_run(client, started.run_id, wait, poll)
            error = getattr(ended.error, "message", None) if ended.error else None
            result = dataclasses.replace(result, run_state=str(ended.state).upper(), run_error=error)
    return result


__all__ = [
    "FINAL_STATES",
    "HASH_LENGTH",
    "Package",
    "Submission",
    "default_run_name",
    "ensure_experiment",
    "ensure_pipeline",
    "ensure_version",
    "find_pipeline",
    "find_version",
    "read_package",
    "run_arguments",
    "submit",
    "wait_for_run",
]
