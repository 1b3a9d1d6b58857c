"""``helm/kfloop/values.schema.json``: every value the chart takes, typed, described, closed to unknown keys
(``additionalProperties: false``), so Helm refuses a bad value at ``install`` naming it.

The chart's own settings are declared here; ``generated`` is the shape of what ``kfloop chart values`` derives
from a config (the config itself is validated by its own model when the values are generated). The
README's values reference is rendered from this schema (:func:`values_reference`).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

__all__ = ["values_reference", "values_schema", "values_schema_text"]

#: A Kubernetes name (DNS-1123 label).
NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR = rf"^({_OCTET}\.){{3}}{_OCTET}/([0-9]|[12][0-9]|3[0-2])$|^[0-9a-fA-F:]+/[0-9]{{1,3}}$"
QUANTITY = r"^([+]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
#: An optional name (empty allowed).
OPTIONAL_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"
#: A name prefix of Services and Pods (DNS-1035: a letter first, no dots), empty allowed.
OPTIONAL_PREFIX = r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$"
IMAGE_REPOSITORY = r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9._-]+)*$"
IMAGE_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


def _obj(description: str, required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    schema = {"type": "object", "description": description, "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def _str(description: str, pattern: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **({"pattern": pattern} if pattern else {}), **extra}


def _int(description: str, minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _map(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def _resources(description: str) -> dict[str, Any]:
    pair = _obj(
        "CPU and memory.",
        ("cpu", "memory"),
        cpu=_str("CPU quantity, e.g. 500m.", QUANTITY),
        memory=_str("Memory quantity, e.g. 512Mi.", QUANTITY),
    )
    return _obj(description, ("requests", "limits"), requests=pair, limits=pair)


def _chart_properties() -> dict[str, Any]:
    """The chart's own values (helm/kfloop/values.yaml above the generated marker)."""
    return {
        "nameOverride": _str("Replaces the chart name in object names.", OPTIONAL_PREFIX),
        "fullnameOverride": _str("Replaces the release-chart prefix of object names.", OPTIONAL_PREFIX),
        "commonLabels": {
            **_map("Labels added to every object (the chart's own label keys win)."),
            "propertyNames": {"pattern": LABEL_KEY},
            "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
        },
        "serviceAccounts": _obj(
            "The ServiceAccounts the chart creates.",
            create=_bool("Create the ServiceAccounts (serving, workflows, the chart's own); false: they must exist."),
            annotations=_map("Annotations on each (e.g. a cloud IAM role)."),
        ),
        "rbac": _obj(
            "Roles and RoleBindings.",
            create=_bool("Create the Roles and RoleBindings."),
            pipelineRunnerServiceAccount=_str(
                "The account Kubeflow Pipelines runs steps as here (pipeline-runner; default-editor in a profile): "
                "it may get, create, update and patch InferenceServices in this namespace, nothing more.",
                NAME,
            ),
        ),
        "inferenceService": _obj(
            "The KServe InferenceService (transformer + predictor).",
            enabled=_bool("Render the InferenceService."),
            modelVersion=_str(
                "Registry version to serve (e.g. v3); empty: none is rendered and the pipeline's deploy step "
                "creates it. An upgrade keeps the version the cluster serves.",
                r"^(v[0-9]+)?$",
            ),
            canary=_bool(
                "Roll modelVersion out as a canary (config.serving.canary_traffic_percent of the traffic, the last "
                "ready version the rest) until set back to false."
            ),
        ),
        "redis": _obj(
            "Redis for the online store.",
            enabled=_bool("Run Redis in the release; false: the config's connection string names an external one."),
            image=_obj(
                "The Redis image: a maintained upstream image pinned by digest.",
                ("repository", "tag"),
                repository=_str("Image repository.", IMAGE_REPOSITORY),
                tag=_str("Image tag (never latest).", IMAGE_TAG, **{"not": {"const": "latest"}}),
                digest=_str("Image digest; empty: the tag alone.", r"^(sha256:[a-f0-9]{64})?$"),
            ),
            runAsUser=_int("Non-root UID Redis runs as (a high UID, apart from the node's users).", 1),
            auth=_obj(
                "The Redis password, from a Secret you create.",
                existingSecret=_str("Secret with the password; empty: no password.", OPTIONAL_NAME),
                passwordKey=_str("Key of the password in that Secret.", r"^[-._a-zA-Z0-9]+$"),
            ),
            maxMemory=_str("Redis maxmemory (e.g. 400mb); keep it under the memory limit.", r"^[0-9]+(b|kb|mb|gb)?$"),
            resources=_resources("CPU/memory of the Redis container."),
        ),
        "feastServer": _obj(
            "Feast's feature server (feast serve), optional.",
            enabled=_bool("Run Feast's feature server."),
            port=_int("Its HTTP port.", 1024, 65535),
            replicas=_int("Replicas.", 1),
            resources=_resources("CPU/memory of the Feast container."),
        ),
        "streamWorker": _obj(
            "The stream worker (kfloop stream run), a Deployment of config.stream.replicas consumers in one group; "
            "only when the config has a stream section.",
            enabled=_bool(
                "Run the stream worker when the config has a stream section; false: never (it runs elsewhere)."
            ),
            metricsPort=_int("Port of the worker's /metrics (Prometheus scrapes it, the probes call it).", 1024, 65535),
            terminationGracePeriodSeconds=_int(
                "Seconds a stopping worker has to finish its batch, archive the records and acknowledge them.",
                30,
                3600,
            ),
            resources=_resources("CPU/memory of the worker container."),
        ),
        "schedules": _obj(
            "The scheduled jobs (Argo CronWorkflows); their timing is config.schedules.",
            enabled=_bool("Create the drift check and the materialization."),
        ),
        "networkPolicy": _obj(
            "Default deny for kfloop's pods plus the flows the stack needs.",
            enabled=_bool("Create the NetworkPolicies."),
            servingClientNamespaces={
                "type": "array",
                "description": "Namespaces whose pods may call the transformer; empty: any.",
                "items": {"type": "string", "pattern": NAME},
            },
            knativeNamespaces={
                "type": "array",
                "minItems": 1,
                "description": "Namespaces of Knative and the ingress gateway (Knative mode).",
                "items": {"type": "string", "pattern": NAME},
            },
            monitoringNamespace=_str("Namespace of Prometheus (scrapes /metrics).", NAME),
            egressPorts={
                "type": "array",
                "minItems": 1,
                "description": "Ports kfloop's pods may call outside the namespace (S3, the KFP API, webhooks).",
                "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            egressCIDRs={
                "type": "array",
                "minItems": 1,
                "description": "Where those calls may go.",
                "items": {"type": "string", "pattern": CIDR},
            },
            streamEgressPorts={
                "type": "array",
                "minItems": 1,
                "description": "Ports the stream worker may also call at egressCIDRs (an external Redis, Kafka "
                "brokers).",
                "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            apiServerCIDRs={
                "type": "array",
                "minItems": 1,
                "description": "The Kubernetes API server's addresses (Argo's executor reports step results to it).",
                "items": {"type": "string", "pattern": CIDR},
            },
            apiServerPorts={
                "type": "array",
                "minItems": 1,
                "description": "The API server's ports (443 behind the kubernetes Service; 6443 on kind/kubeadm).",
                "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
        ),
        "podDisruptionBudget": _obj("PodDisruptionBudgets.", enabled=_bool("Create the PodDisruptionBudgets.")),
        "monitoring": _obj(
            "Prometheus-operator objects and the Grafana dashboard.",
            serviceMonitor=_obj(
                "ServiceMonitors for the serving /metrics and, when it runs, the stream worker's.",
                enabled=_bool("Create it (needs the prometheus-operator CRDs)."),
                interval=_str("Scrape interval.", r"^[0-9]+(ms|s|m|h)$"),
                labels=_map("Labels your Prometheus selects ServiceMonitors by."),
            ),
            prometheusRule=_obj(
                "A PrometheusRule with kfloop's alert rules.",
                enabled=_bool("Create it (needs the prometheus-operator CRDs)."),
                labels=_map("Labels your Prometheus selects rules by."),
            ),
            grafanaDashboard=_obj(
                "The Grafana dashboard as a ConfigMap.",
                enabled=_bool("Create the dashboard ConfigMap."),
                labels=_map('Labels Grafana\'s dashboard sidecar selects (grafana_dashboard: "1").'),
            ),
        ),
        "tests": _obj(
            "The helm test pod.",
            enabled=_bool("Render the helm test pod."),
            resources=_resources("CPU/memory of the test container."),
        ),
    }


def _generated() -> dict[str, Any]:
    """The shape of the values kfloop derives from the config (never written by hand)."""
    env_list = {"type": "array", "items": {"type": "object"}, "description": "Env vars (Kubernetes EnvVar)."}
    nullable_int = {"type": ["integer", "null"], "minimum": 1}
    return _obj(
        "Your kfloop.yaml and what kfloop derives from it (`kfloop chart values -c kfloop.yaml`): generate it, never "
        "edit it.",
        (
            "configJson",
            "configYaml",
            "configMapName",
            "workflowsServiceAccount",
            "registryUri",
            "deploymentModeAnnotation",
            "transformerEnv",
            "predictorEnv",
            "feastEnv",
            "secrets",
            "featureStoreYaml",
            "alertRules",
            "cronWorkflows",
        ),
        configJson=_str("The whole config as JSON (KFLOOP_CONFIG_JSON; the templates read it).", r"^\{"),
        configYaml=_str("The whole config as YAML (the ConfigMap's kfloop.yaml)."),
        configMapName=_str("ConfigMap holding kfloop.yaml.", NAME.replace("{0,61}", "{0,251}")),
        workflowsServiceAccount=_str("ServiceAccount of the scheduled workflows.", NAME),
        servingServiceAccount={"type": ["string", "null"], "description": "ServiceAccount of the serving pods."},
        storageSecret={"type": ["string", "null"], "description": "Secret with the S3 keys."},
        registryUri=_str("S3 URI of the model's registry folder.", r"^s3://"),
        deploymentModeAnnotation={"enum": ["RawDeployment", "Serverless"], "description": "KServe's mode."},
        transformerTimeout={**nullable_int, "description": "Knative revision timeout of the transformer."},
        transformerGraceSeconds={**nullable_int, "description": "Raw mode: the transformer's grace period."},
        transformerEnv=env_list,
        predictorEnv=env_list,
        feastEnv=env_list,
        secrets={"type": "array", "items": {"type": "object"}, "description": "Secrets the config names."},
        featureStoreYaml=_str("Feast's feature_store.yaml."),
        alertRules={"type": "array", "items": {"type": "object"}, "description": "Prometheus rule groups."},
        cronWorkflows={"type": "array", "items": {"type": "object"}, "description": "CronWorkflows built with Hera."},
        streamEnv={**env_list, "description": "The stream worker's env vars (only with a stream section)."},
        userRoles={
            "type": "array",
            "items": {"type": "object"},
            "description": "governance.roles as Roles and RoleBindings (only when roles are configured).",
        },
    )


def values_schema() -> dict[str, Any]:
    """The chart's values schema (JSON Schema 2020-12), closed at every level the chart reads."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kfloop Helm chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["generated"],
        "properties": {**_chart_properties(), "generated": _generated()},
    }


def values_schema_text() -> str:
    return json.dumps(values_schema(), indent=2, ensure_ascii=False) + "\n"


def _rows(schema: dict[str, Any], defaults: Any, prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, prop in (schema.get("properties") or {}).items():
        path, default = f"{prefix}{key}", (defaults or {}).get(key) if isinstance(defaults, dict) else None
        if prop.get("type") == "object" and prop.get("properties"):
            rows.extend(_rows(prop, default, f"{path}."))
        else:
            kind = prop.get("type", "")
            kind = "/".join(kind) if isinstance(kind, list) else str(kind)
            shown = json.dumps(default, ensure_ascii=False) if default not in (None, {}, []) else "—"
            rows.append((path, kind, shown, prop.get("description", "")))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def values_reference() -> str:
    """The chart's own values with their defaults (helm/kfloop/values.yaml) as a Markdown table: the README's
    values reference."""
    from kfloop.kube.chart import CHART_DIR

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text()) or {}
    schema = values_schema()
    chart_only = {"properties": {k: v for k, v in schema["properties"].items() if k != "generated"}}
    lines = ["| value | type | default | what it does |", "|---|---|---|---|"]
    lines += [
        f"| `{path}` | {kind} | `{_cell(shown)}` | {_cell(text)} |"
        if shown != "—"
        else f"| `{path}` | {kind} | — | {_cell(text)} |"
        for path, kind, shown, text in _rows(chart_only, defaults, "")
    ]
    lines.append(
        "| `generated` | object | — | Your kfloop.yaml and what kfloop derives from it "
        "(`kfloop chart values -c kfloop.yaml`): generate it, never edit it. |"
    )
    return "\n".join(lines)
