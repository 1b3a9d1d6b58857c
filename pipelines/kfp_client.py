"""The one place a ``kfp.Client`` is built from config: ``cluster.kfp_host``, ``cluster.kfp_namespace``,
``cluster.kfp_auth`` and ``cluster.kfp_ca_cert`` (``kfloop submit`` and the drift-triggered cluster retrain share
it).

It first checks TLS and asks the API's healthz with a timeout, so a wrong host, a bad certificate, a sign-in
redirect or a refused token is one clear error naming the host instead of kfp's retries and tracebacks; and
:func:`kfp_api_errors` turns the API's failures into one :class:`~kfloop.errors.PipelineError` each.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfloop.config.cluster import ClusterConfig, KfpAuth
from kfloop.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from kfp import Client

__all__ = ["HEALTH_TIMEOUT", "bearer_token", "kfp_api_errors", "kfp_client", "kfp_host", "kfp_quiet", "ui_base"]

#: (connect, read) seconds of the health check: a host that does not answer fails fast.
HEALTH_TIMEOUT = (10.0, 30.0)


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
def kfp_quiet() -> Iterator[None]:
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
    with kfp_quiet(), kfp_api_errors(cluster, "the connection"):
        return Client(
            host=host,
            namespace=cluster.kfp_namespace or "kubeflow",
            ui_host=ui_base(cluster),
            ssl_ca_cert=cluster.kfp_ca_cert,
            **auth,
        )
