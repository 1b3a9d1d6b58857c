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

Connection. :func:`kfp_client` is the one place a ``kfp.Client`` is built from config (``kfloop submit``
and the drift-triggered cluster retrain share it): ``cluster.kfp_host``, ``cluster.kfp_namespace`` and
``cluster.kfp_auth``. It first asks the API's healthz with a timeout, so a wrong host, a sign-in redirect or
a refused token is one clear error naming the host instead of kfp's retries and tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kfloop.config import Config, config_to_json
from kfloop.config.cluster import ClusterConfig, KfpAuth
from kfloop.config.run_parameters import NAMES, apply_run_parameters, parse_run_parameter, run_parameter_defaults
from kfloop.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from kfp import Client

#: Hex digits of the package hash in a version name.
HASH_LENGTH = 12
#: Run states after which a run changes no more (kfp_server_api.V2beta1RuntimeState).
FINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
#: The health check's (connect, read) timeouts in seconds: kfp's own requests have none.
HEALTH_TIMEOUT = (10.0, 30.0)
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


# --- the client -----------------------------------------------------------------------------------------------
def kfp_host(cluster: ClusterConfig) -> str:
    """``cluster.kfp_host``, checked."""
    host = cluster.kfp_host
    if not host:
        raise ConfigError(
            "cluster.kfp_host is not set: the Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888"
        )
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"cluster.kfp_host {host!r}: start it with http:// or https://")
    return host.rstrip("/")


def ui_base(cluster: ClusterConfig) -> str:
    """The UI's base URL for links: ``cluster.kfp_ui_host``, else the API host (the ingress serves both)."""
    return (cluster.kfp_ui_host or kfp_host(cluster)).rstrip("/")


def bearer_token(auth: KfpAuth) -> str | None:
    """The token ``cluster.kfp_auth`` sends now (None for mode none)."""
    if auth.mode == "none":
        return None
    if auth.mode == "service_account_token":
        path = Path(auth.token_path)
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"cluster.kfp_auth.token_path: {path} does not exist (cluster.kfp_auth.mode is service_account_token; "
                "in a Kubeflow pod the PodDefault that allows access to Kubeflow Pipelines mounts the token)"
            ) from None
        except OSError as err:
            raise ConfigError(f"cluster.kfp_auth.token_path: cannot read {path}: {err}") from err
        if not token:
            raise ConfigError(f"cluster.kfp_auth.token_path: {path} is empty")
        return token
    return _kubeconfig_token(auth.kube_context)


def _kubeconfig_token(context: str | None) -> str:
    """The bearer token of a kubeconfig context (the kubernetes client runs exec and OIDC plugins for it)."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    where = f"context {context!r}" if context else "the current context"
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(  # $KUBECONFIG as of now (the client reads it once, when first imported)
            config_file=os.environ.get("KUBECONFIG") or None, context=context, client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError) as err:
        raise ConfigError(f"cluster.kfp_auth (mode kubeconfig): cannot load {where} of the kubeconfig: {err}") from err
    value = configuration.api_key.get("authorization", "")
    if not value.startswith("Bearer "):
        raise ConfigError(
            f"cluster.kfp_auth (mode kubeconfig): {where} of the kubeconfig has no bearer token (client certificates "
            "and basic auth cannot sign in to Kubeflow Pipelines); use a token context or mode service_account_token"
        )
    return value.removeprefix("Bearer ")


def _api_message(err: Any) -> str:
    """The server's own words from an ApiException body (grpc-gateway JSON or the upload server's)."""
    body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else str(err.body or "")
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:300] or str(err.reason or "")
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error_message") or data.get("error") or data)[:300]
    return str(data)[:300]


@contextlib.contextmanager
def kfp_api_errors(cluster: ClusterConfig, doing: str) -> Iterator[None]:
    """Kubeflow Pipelines API failures while ``doing`` something as one clear PipelineError naming the host."""
    import kfp_server_api
    import urllib3

    host = cluster.kfp_host
    try:
        yield
    except kfp_server_api.ApiException as err:
        status = err.status or 0
        if status == 0:  # TLS failures come back as status 0
            raise PipelineError(f"cannot reach Kubeflow Pipelines at {host} (cluster.kfp_host): {err.reason}") from err
        if status in (401, 403):
            raise PipelineError(
                f"Kubeflow Pipelines at {host} refused {doing} ({status} {err.reason}: {_api_message(err)}) with "
                f"cluster.kfp_auth.mode {cluster.kfp_auth.mode}: check the credentials and cluster.kfp_namespace"
            ) from err
        if 300 <= status < 400:
            where = dict(err.headers or {}).get("Location", "elsewhere")
            raise PipelineError(
                f"{host} (cluster.kfp_host) redirected {doing} to {where}: a sign-in page? Send a token "
                "(cluster.kfp_auth) or point cluster.kfp_host at the API itself"
            ) from err
        raise PipelineError(
            f"Kubeflow Pipelines at {host} answered {status} {err.reason} to {doing}: {_api_message(err)}"
        ) from err
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise PipelineError(f"cannot reach Kubeflow Pipelines at {host} (cluster.kfp_host): {reason}") from err


def _check_health(cluster: ClusterConfig, host: str, token: str | None) -> None:
    """GET healthz once with a timeout and no redirects: the host answers as the KFP API, or a clear error."""
    import kfp_server_api
    import urllib3

    try:  # TLS first: kfp_server_api fails on a TLS error with an AttributeError of its own
        timeout = urllib3.Timeout(connect=HEALTH_TIMEOUT[0], read=HEALTH_TIMEOUT[1])
        pool = urllib3.PoolManager(ca_certs=cluster.kfp_ca_cert, retries=False, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        pool.request("GET", f"{host.rstrip('/')}/apis/v2beta1/healthz", headers=headers, redirect=False)
    except urllib3.exceptions.MaxRetryError as err:
        if isinstance(err.reason, urllib3.exceptions.SSLError):
            raise PipelineError(
                f"TLS to Kubeflow Pipelines at {host} (cluster.kfp_host) failed: {err.reason}; if its certificate "
                "is signed by your own CA, set cluster.kfp_ca_cert to that CA's PEM file"
            ) from err
    except urllib3.exceptions.SSLError as err:
        raise PipelineError(
            f"TLS to Kubeflow Pipelines at {host} (cluster.kfp_host) failed: {err}; if its certificate "
            "is signed by your own CA, set cluster.kfp_ca_cert to that CA's PEM file"
        ) from err
    except (urllib3.exceptions.HTTPError, OSError):
        pass  # unreachable and the like: the health check below says it, naming the host
    configuration = kfp_server_api.Configuration(host=host)
    configuration.ssl_ca_cert = cluster.kfp_ca_cert
    configuration.retries = False  # one try; a redirect is answered as itself, not followed to a login page
    if token:
        configuration.api_key["authorization"] = token
        configuration.api_key_prefix["authorization"] = "Bearer"
    with kfp_server_api.ApiClient(configuration) as api_client, kfp_api_errors(cluster, "the health check"):
        response = kfp_server_api.HealthzServiceApi(api_client).healthz_service_get_healthz(
            _preload_content=False, _request_timeout=HEALTH_TIMEOUT
        )
        body = response.data
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if not isinstance(health, dict):
        raise PipelineError(
            f"{host} (cluster.kfp_host) is not the Kubeflow Pipelines API: GET /apis/v2beta1/healthz answered "
            f"{response.headers.get('Content-Type', 'no content type')}, not JSON"
        )
    if health.get("multi_user") and not cluster.kfp_namespace:
        raise ConfigError(
            f"Kubeflow Pipelines at {host} is multi-user: set cluster.kfp_namespace to your profile namespace"
        )


@contextlib.contextmanager
def _kfp_quiet() -> Iterator[None]:
    """kfp prints links on stdout and warns on every Client: the caller prints what matters."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        yield


def kfp_client(cluster: ClusterConfig) -> Client:
    """The ``kfp.Client`` for ``cluster``: host, namespace and credentials from config, health-checked.

    Mode service_account_token hands kfp the token file itself, which it reads afresh for every request (the
    kubelet rotates projected tokens); mode kubeconfig sends the context's token as of now.
    """
    from kfp import Client
    from kfp.client import ServiceAccountTokenVolumeCredentials

    host = kfp_host(cluster)
    token = bearer_token(cluster.kfp_auth)
    _check_health(cluster, host, token)
    auth: dict[str, Any] = {}
    if cluster.kfp_auth.mode == "service_account_token":
        auth["credentials"] = ServiceAccountTokenVolumeCredentials(cluster.kfp_auth.token_path)
    elif token:
        auth["existing_token"] = token
    with _kfp_quiet(), kfp_api_errors(cluster, "the connection"):
        return Client(
            host=host,
            namespace=cluster.kfp_namespace or "kubeflow",
            ui_host=ui_base(cluster),
            ssl_ca_cert=cluster.kfp_ca_cert,
            **auth,
        )


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
        with _kfp_quiet():
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
            with _kfp_quiet():
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
        with _kfp_quiet():
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
    "bearer_token",
    "default_run_name",
    "ensure_experiment",
    "ensure_pipeline",
    "ensure_version",
    "find_pipeline",
    "find_version",
    "kfp_api_errors",
    "kfp_client",
    "kfp_host",
    "read_package",
    "run_arguments",
    "submit",
    "ui_base",
    "wait_for_run",
]
