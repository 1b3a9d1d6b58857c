"""The training pipeline (KFP v2): ingest → validate → quality gate → features → materialize → training set
→ train → evaluate (promotion gate) → deploy (the champion to KServe).

Materialization runs before the training set: both apply the Feast objects to one registry file. The
whole config travels as one pipeline parameter (``config_json``) whose default is the config the pipeline
was compiled from, so a run launched from the Kubeflow UI uses it unless the user overrides it.

Each attribute table of ``features.tables`` (known when the pipeline is compiled) gets its own ingest →
validate → quality gate branch, in parallel with the main source's, under its own contract; the features
step waits for every gate. Its file is the pipeline parameter ``<table>_source_uri`` (default: the table's
``source.uri``), as the main source's is ``source_uri``.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature at decoration time.

import inspect
import json
from collections.abc import Callable

from kfp import dsl, kubernetes

from kfloop.cluster_env import plain_env, secret_env_refs
from kfloop.config import Config, Resources, config_to_json
from kfloop.config.cluster import StepName
from kfloop.config.run_parameters import NAMES, RUN_PARAMETERS, run_parameter_defaults
from kfloop.pipelines.components import (
    config_component,
    deploy_component,
    evaluate_component,
    features_component,
    gate_component,
    ingest_component,
    materialize_component,
    train_component,
    training_set_component,
    validate_component,
)
from kfloop.pipelines.define import define_pipeline

#: Retries for steps that talk to storage over the network (idempotent steps only).
RETRIES = 2
#: Resources of the steps that only read their parameters (the run parameters, the quality gate).
_LIGHT = Resources(cpu_request="100m", cpu_limit="500m", memory_request="128Mi", memory_limit="256Mi")


def _step(func: Callable, config: Config) -> Callable:
    """A lightweight component running in the project image, which has kfloop preinstalled."""
    return dsl.component(func=func, base_image=config.cluster.image, install_kfp_package=False)


def _apply_resources(task: dsl.PipelineTask, res: Resources) -> None:
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)


def _apply_secrets(task: dsl.PipelineTask, config: Config, *, online_store: bool = False) -> None:
    """On a cluster, S3 keys (and the Redis connection string) come from Kubernetes Secrets as the env
    vars the config names (the same ones the InferenceService gets: ``kfloop.cluster_env``)."""
    for ref in secret_env_refs(config, online_store=online_store):
        kubernetes.use_secret_as_env(task, secret_name=ref.secret_name, secret_key_to_env={ref.secret_key: ref.env})
    for name, value in plain_env(config, online_store=online_store).items():
        task.set_env_variable(name, value)


def _configure(
    task: dsl.PipelineTask, config: Config, step: StepName, name: str, retries: int, *, online_store: bool = False
) -> dsl.PipelineTask:
    """What every step gets: a display name, no caching (steps read and write the workspace, which a
    cache key does not see), retries for transient faults, resources and secrets from the config."""
    task.set_display_name(name)
    task.set_caching_options(False)
    if retries:
        task.set_retry(retries, backoff_duration="30s", backoff_factor=2)
    _apply_resources(task, config.cluster.step_resources(step))
    _apply_secrets(task, config, online_store=online_store)
    if config.cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(config.cluster.image_pull_secrets))
    return task


def pipeline_name(config: Config) -> str:
    return f"{config.project}-training"


def table_uri_parameter(table: str) -> str:
    """The pipeline parameter holding attribute table ``table``'s source URI: ``<table>_source_uri``, like the
    main source's ``source_uri`` (a table name is ``[a-z][a-z0-9_]*``, so this is a valid parameter name, and
    the suffix keeps it clear of ``source_uri`` and ``config_json`` whatever the table is called)."""
    return f"{table}_source_uri"


def _signature(config: Config) -> inspect.Signature:
    """The pipeline's parameters: the config, the main source's URI, the run form's typed parameters
    (defaults: the config's values), then one URI per attribute table."""
    defaults = run_parameter_defaults(config)
    params = [("config_json", config_to_json(config), str), ("source_uri", config.source.uri, str)]
    params += [(p.name, defaults[p.name], p.kind) for p in RUN_PARAMETERS]
    params += [(table_uri_parameter(t.name), t.source.uri, str) for t in config.features.tables]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [inspect.Parameter(name, kind, default=default, annotation=kind_) for name, default, kind_ in params],
        return_annotation=dsl.Model,
    )


def _docstring(config: Config) -> str:
    """Google-style Args, which kfp turns into the parameters' descriptions in the Kubeflow UI."""
    lines = [
        f"kfloop training loop for {config.project}.",
        "",
        "Args:",
        "    config_json: The whole config (advanced): the run parameters below override its keys.",
        "    source_uri: The main source's file (source.uri).",
    ]
    lines += [f"    {p.name}: {p.description}" for p in RUN_PARAMETERS]
    lines += [f"    {table_uri_parameter(t.name)}: Attribute table {t.name}'s file." for t in config.features.tables]
    return "\n".join(lines)


def build_training_pipeline(config: Config, *, retries: int = RETRIES) -> Callable:
    """The KFP pipeline function for ``config`` (call it under ``kfp.local`` or compile it).

    ``retries`` is for a cluster's transient faults; local runs pass 0 so a real error fails at once.
    """
    ingest_op = _step(ingest_component, config)
    validate_op = _step(validate_component, config)
    gate_op = _step(gate_component, config)
    features_op = _step(features_component, config)
    materialize_op = _step(materialize_component, config)
    training_set_op = _step(training_set_component, config)
    train_op = _step(train_component, config)
    evaluate_op = _step(evaluate_component, config)
    deploy_op = _step(deploy_component, config)
    config_op = _step(config_component, config)
    defaults_json = json.dumps(run_parameter_defaults(config), sort_keys=True)

    def data_gate(config_json: str, source_uri: str, table: str = "") -> dsl.PipelineTask:
        """ingest → validate → quality gate of the main source (``table`` "") or of an attribute table."""
        scope = {"table": table} if table else {}  # the main source's tasks leave it at its default
        ingest = _configure(
            ingest_op(config_json=config_json, source_uri=source_uri, **scope),
            config,
            "ingest",
            f"ingest ({table})" if table else "ingest",
            retries,
        )
        validate = _configure(
            validate_op(config_json=config_json, ingest_manifest=ingest.outputs["run_manifest"], **scope),
            config,
            "validate",
            f"validate ({table})" if table else "validate (data contract)",
            retries,
        )
        gate = gate_op(passed=validate.outputs["passed"], message=validate.outputs["message"], **scope)
        gate.set_display_name(f"quality gate ({table})" if table else "quality gate").set_caching_options(False)
        _apply_resources(gate, _LIGHT)  # it only reads its parameters
        return gate

    def training(config_json: str, source_uri: str, *rest: str | int | float) -> dsl.Model:
        values, table_uris = dict(zip(NAMES, rest[: len(NAMES)], strict=True)), rest[len(NAMES) :]
        # no retries (a bad parameter fails the same way every time) and no secrets: it reads only its inputs
        resolved = config_op(config_json=config_json, defaults_json=defaults_json, **values)
        resolved.set_display_name("config (run parameters)").set_caching_options(False)
        _apply_resources(resolved, _LIGHT)
        config_json = resolved.output
        gates = [data_gate(config_json, source_uri)]
        gates += [
            data_gate(config_json, uri, t.name) for t, uri in zip(config.features.tables, table_uris, strict=True)
        ]
        features = _configure(
            features_op(config_json=config_json).after(*gates), config, "features", "features", retries
        )
        materialize = _configure(
            materialize_op(config_json=config_json).after(features),
            config,
            "materialize",
            "materialize (Feast online)",
            retries,
            online_store=True,
        )
        training_set = _configure(
            # after materialize: both `feast apply` to one registry file, which must not be written twice at once
            training_set_op(config_json=config_json).after(materialize),
            config,
            "training_set",
            "training set (point-in-time)",
            retries,
            online_store=True,  # it opens the Feast store, whose config names the online store
        )
        train = _configure(
            train_op(config_json=config_json, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).after(training_set),
            config,
            "train",
            "train",
            retries,
        )
        evaluate = _configure(
            evaluate_op(config_json=config_json, version=train.outputs["Output"]),
            config,
            "evaluate",
            "evaluate + promotion gate",
            retries,
        )
        _configure(
            # create-or-update is idempotent, so a retry after a lost API response finds the work done
            deploy_op(config_json=config_json, champion=evaluate.outputs["Output"]),
            config,
            "deploy",
            "deploy (KServe)",
            retries,
        )
        return train.outputs["model"]

    training.__signature__ = _signature(config)  # kfp reads the parameters from it and passes them in order
    training.__doc__ = _docstring(config)  # the run form's help text of each parameter
    return define_pipeline(
        training,
        name=pipeline_name(config),
        description=f"kfloop training loop for {config.project}",
        pipeline_root=config.cluster.pipeline_root,
    )
