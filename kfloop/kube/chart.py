"""Render and lint the Helm chart ``helm/kfloop`` with the real Helm engine (``helm-python-sdk``: Helm's Go
SDK as a library, no ``helm`` binary), with the values kfloop generates from a config.

Values are layered as ``helm install`` layers them: the chart's ``values.yaml``, then the generated part for the
given config (:func:`kfloop.kube.values.chart_values`), then ``-f`` files in order, then ``--set`` pairs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kfloop.config import Config, parse_config
from kfloop.errors import ConfigError
from kfloop.kube.values import chart_values, deep_merge

__all__ = [
    "CHART_DIR",
    "HOOK_ANNOTATION",
    "is_hook",
    "lint_chart",
    "load_values_files",
    "release_values",
    "render_manifests",
    "render_objects",
]


def _installed_chart() -> Path:
    """helm/kfloop: beside the kfloop package in a source checkout, inside it (kfloop/helm) in a wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "helm" / "kfloop", package / "helm" / "kfloop"):
        if (candidate / "Chart.yaml").is_file():
            return candidate
    return package.parent / "helm" / "kfloop"


#: The chart kfloop renders (`--chart` takes another).
CHART_DIR = _installed_chart()
HOOK_ANNOTATION = "helm.sh/hook"
#: Release names that make valid Service and Pod names once the chart's suffixes are appended.
RELEASE_NAME = r"[a-z]([-a-z0-9]{0,46}[a-z0-9])?"
#: Kubernetes version the chart is rendered and linted for (its ``kubeVersion`` admits it).
KUBE_VERSION = "v1.33.0"


def _chart_dir(chart_dir: Path | None) -> Path:
    path = Path(chart_dir) if chart_dir else CHART_DIR
    if not (path / "Chart.yaml").is_file():
        raise ConfigError(f"{path}: not a Helm chart (no Chart.yaml); pass --chart helm/kfloop from a kfloop checkout")
    return path


def load_values_files(paths: Sequence[Path]) -> dict[str, Any]:
    """``-f`` files merged in order (later wins), each named when it is missing or not a YAML mapping."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as err:
            raise ConfigError(f"{path}: cannot read values file ({err.strerror})") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a values file must be a mapping, not {type(data).__name__}")
        merged = deep_merge(merged, data)
    return merged


def release_values(config: Config, values_files: Sequence[Path] = (), set_values: Sequence[str] = ()) -> dict[str, Any]:
    """The user-supplied values of a release (what Helm merges over the chart's values.yaml): the values
    generated from ``config``, then the files and ``--set`` pairs. Their ``config.<key>`` overrides are applied
    to the config and validated by its model first, and the values generated from the result, so nothing the
    chart derives from the config can disagree with it."""
    import helm_python as helm

    user = load_values_files(values_files)
    for pair in set_values:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE (e.g. redis.enabled=false)")
        user = deep_merge(user, helm.parse_set_string(pair))
    overrides = user.pop("config", None)
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise ConfigError(f"config: the overrides of config keys must be a mapping, not {overrides!r}")
        merged = deep_merge(config.model_dump(mode="json"), overrides)
        config = parse_config(merged, "the config with the values' config.<key> overrides")
    return deep_merge(chart_values(config), user)


def render_manifests(
    config: Config,
    *,
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    release: str = "kfloop",
    namespace: str | None = None,
    chart_dir: Path | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Each template's rendered text by template path (NOTES.txt included), as ``helm template`` renders it.

    ``values`` replaces the user values altogether (what ``helm template -f`` of those values would render).
    """
    import helm_python as helm

    if not re.fullmatch(RELEASE_NAME, release):
        raise ConfigError(
            f"release name {release!r}: it prefixes Service and Pod names, so a lowercase letter first, then lowercase "
            "letters, digits and '-', at most 48 characters (DNS-1035)"
        )
    chart = helm.Chart.load(str(_chart_dir(chart_dir)))
    user = release_values(config, values_files, set_values) if values is None else values
    namespace = namespace or values_namespace(user) or config.cluster.namespace
    try:
        return chart.render(user, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as err:
        raise ConfigError(f"helm/kfloop: {err}") from err


def values_namespace(values: dict[str, Any]) -> str | None:
    """The ``cluster.namespace`` of the config inside generated values (after any ``config.<key>`` overrides)."""
    try:
        return json.loads(values["generated"]["configJson"])["cluster"]["namespace"]
    except (KeyError, TypeError, ValueError):
        return None


def is_hook(obj: dict[str, Any]) -> bool:
    """A Helm hook (the ``helm test`` pod): Helm runs it on demand, it is not part of what is applied."""
    return HOOK_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {})


def objects_of(manifests: dict[str, str], *, hooks: bool = False) -> list[dict[str, Any]]:
    """The Kubernetes objects in rendered templates, in template order; hooks only when asked."""
    objects = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc and (hooks or not is_hook(doc)):
                objects.append(doc)
    return objects


def render_objects(
    config: Config,
    *,
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    release: str = "kfloop",
    namespace: str | None = None,
    chart_dir: Path | None = None,
    hooks: bool = False,
) -> list[dict[str, Any]]:
    """The chart's objects for ``config`` (what ``kfloop deploy`` applies), hooks such as the test pod left out."""
    manifests = render_manifests(
        config,
        values_files=values_files,
        set_values=set_values,
        release=release,
        namespace=namespace,
        chart_dir=chart_dir,
    )
    return objects_of(manifests, hooks=hooks)


def lint_chart(values: dict[str, Any], *, chart_dir: Path | None = None, namespace: str | None = None) -> list[str]:
    """``helm lint --strict`` findings (warnings count) for the chart with ``values``, in the config's namespace
    unless told; empty when clean. A template's ``fail`` counts too (lint mode only logs it)."""
    import helm_python as helm

    chart = str(_chart_dir(chart_dir))
    namespace = namespace or values_namespace(values) or "default"
    report = helm.lint(chart, values, strict=True, namespace=namespace, kube_version=KUBE_VERSION)
    found = [f"{m.get('path')}: {m.get('error')}" for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    try:  # what lint swallows: a template's fail
        helm.Chart.load(chart).render(values, name="kfloop", namespace=namespace)
    except helm.HelmError as err:
        found.append(f"render: {err}")
    return found + list(report.get("errors") or [])
