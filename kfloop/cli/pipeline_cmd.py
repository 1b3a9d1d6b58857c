"""``kfloop run`` (kfp.local) and ``kfloop compile`` (IR YAML for Kubeflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kfloop.cli._common import (
    DEFAULT_CONFIG,
    ConfigOption,
    console,
    credentials,
    handle_errors,
    load,
    require_role,
    spinner,
)
from kfloop.cli.summary import deploy_table, features_table, ingest_table, model_table, quality_table, tables_table

DEFAULT_COMPILED = Path("pipelines/compiled/training.yaml")


@handle_errors
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[str, typer.Option(help="Source URI for this run; default: source.uri.")] = "",
    table_source: Annotated[
        list[str] | None,
        typer.Option(
            "--table-source",
            metavar="NAME=URI",
            help="Attribute table NAME's file for this run (repeatable); default: its source.uri. On Kubeflow: "
            "the pipeline parameter NAME_source_uri.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            metavar="NAME=VALUE",
            help="A run parameter, as in the Kubeflow UI's run form (repeatable): framework, epochs, learning_rate, "
            "batch_size, early_stopping_patience, seed, threshold_target, gate_tolerance, training_window.",
        ),
    ] = None,
) -> None:
    """Run the training pipeline locally with kfp.local and print a summary.

    Every attribute table of features.tables is ingested and validated under its own contract beside the
    main source; features wait for every table's quality gate.
    """
    from kfloop.config import config_to_json
    from kfloop.config.run_parameters import apply_run_parameters, parse_run_parameter, run_parameter_defaults
    from kfloop.errors import PipelineError
    from kfloop.layout import RUN_LOG, local_workdir
    from kfloop.pipelines.local import project_python_on_path, run_local
    from kfloop.slo.runs import finish_run

    table_uris = {}
    for item in table_source or ():
        name, eq, uri = item.partition("=")
        if not eq or not name or not uri:
            raise typer.BadParameter(f"{item!r}: expected NAME=URI", param_hint="--table-source")
        table_uris[name.strip()] = uri.strip()
    cfg = load(config)
    require_role(cfg, "run")
    parameters = dict(parse_run_parameter(p) for p in param or ())
    if parameters:  # fail now, naming the parameter, not in the pipeline's first step
        apply_run_parameters(config_to_json(cfg), json.dumps(run_parameter_defaults(cfg)), parameters)
    credentials(cfg)  # fail now, not inside a step, when S3 secrets are missing
    project_python_on_path()
    workdir = local_workdir(cfg.storage.type, cfg.storage.root)
    storage, run = _run_record(cfg)
    with spinner() as progress:
        progress.add_task(f"running pipeline (task logs: {workdir / RUN_LOG})", total=None)
        try:
            result = run_local(cfg, workdir, source_uri=source or None, table_uris=table_uris, parameters=parameters)
        except BaseException as err:
            finish_run(storage, run, error=err)
            if isinstance(err, PipelineError):
                _alert(cfg, error=err)
            raise
    console.print(f"[green]pipeline succeeded[/] (task logs: {result.log_path})")
    console.print(ingest_table(result.ingest))
    console.print(quality_table(result.quality))
    if result.tables:
        console.print(tables_table(result.tables))
    console.print(features_table(result.features, result.materialized, result.training_set))
    decision, champion = _decision(cfg, result.model["version"]) if result.model else (None, None)
    finish_run(storage, run, decision=decision)
    _alert(cfg, decision=decision)
    if result.model:
        console.print(model_table(result.model, decision, champion))
    if result.deploy:
        console.print(deploy_table(result.deploy))


def _alert(cfg, error: BaseException | None = None, decision: dict | None = None) -> None:
    """The run's metrics (monitoring/<model>/pipeline.prom) and its notifications (a failed run or gate);
    never raises."""
    from kfloop.cli._common import workspace
    from kfloop.monitoring.run_alerts import report_pipeline_run

    try:
        storage = workspace(cfg)
    except Exception:  # the run's own error is what gets reported
        storage = None
    report_pipeline_run(cfg, storage, error=error, decision=decision)


def _run_record(cfg):
    """The workspace and this run's record for the pipeline-success SLO (kfloop.slo.runs); (None, None) when
    the workspace cannot be opened (the run then reports its own error)."""
    from kfloop.cli._common import workspace
    from kfloop.slo.runs import begin_run

    try:
        storage = workspace(cfg)
    except Exception:
        return None, None
    return storage, begin_run(storage, cfg.training.model_name)


def _decision(cfg, version: str) -> tuple[dict | None, str | None]:
    """The gate decision recorded beside the version, and the champion now."""
    import json

    from kfloop.cli._common import workspace
    from kfloop.layout import decision_key
    from kfloop.registry import ModelRegistry

    reg = ModelRegistry(workspace(cfg), cfg.training.model_name)
    try:
        decision = json.loads(reg.storage.read_text(decision_key(reg.model, version)))
    except FileNotFoundError:
        decision = None
    champion = reg.champion()
    return decision, champion.version if champion else None


@handle_errors
def compile_(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option(help="Where to write the pipeline YAML.")] = DEFAULT_COMPILED,
) -> None:
    """Compile the training pipeline to KFP IR YAML (upload it in the Kubeflow UI)."""
    from kfloop.pipelines.compile import compile_training

    cfg = load(config)
    path = compile_training(cfg, out, config_path=str(config))
    console.print(f"wrote {path} (image {cfg.cluster.image})")
