"""Connecting to a cluster as kubectl does (``kfloop deploy``, ``kfloop schedules apply``): a kubeconfig and
context, else the service account of the pod this runs in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kfloop.errors import DeployError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["connect"]


def _default_kubeconfig() -> str | None:
    """``$KUBECONFIG`` (a ``:``-separated list, as kubectl reads it) or ``~/.kube/config``, when one exists."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return env if any(Path(p).expanduser().is_file() for p in env.split(os.pathsep) if p) else None
    home = Path("~/.kube/config").expanduser()
    return str(home) if home.is_file() else None


def connect(kubeconfig: Path | None = None, context: str | None = None) -> ApiClient:
    """A client for the cluster, as kubectl finds it: ``kubeconfig`` (default ``$KUBECONFIG``, then
    ``~/.kube/config``) at ``context`` (default its current-context), else the service account of the pod this
    runs in. A client of its own, so the kubernetes package's global default configuration stays untouched."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    config_file = str(kubeconfig) if kubeconfig is not None else _default_kubeconfig()
    if config_file is not None or context is not None:
        if kubeconfig is not None and not kubeconfig.is_file():
            raise DeployError(f"--kubeconfig {kubeconfig}: no such file")
        try:
            return kube_config.new_client_from_config(config_file=config_file, context=context)
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as err:
            where = f"kubeconfig {config_file or '~/.kube/config'}" + (f", context {context!r}" if context else "")
            raise DeployError(f"{where}: {err}") from err
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except ConfigException as err:
        raise DeployError(
            "no cluster to talk to: no kubeconfig ($KUBECONFIG, ~/.kube/config or --kubeconfig) and not running "
            f"in a pod with a service account ({err})"
        ) from err
    return client.ApiClient(configuration)
