"""``kfloop submit``: the compiled pipeline to Kubeflow Pipelines as a content-named version, then a run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kfloop.pipelines.submit import Submission

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, require_role


def _print_submission(result: Submission) -> None:
    """The pipeline, version and run with their links: printed as soon as the run starts (before any --wait)."""
    pipeline = "created" if result.pipeline_created else "existing"
    version = "created" if result.version_created else "reused: same package"
    console.print(f"pipeline {result.pipeline_name}  id {result.pipeline_id}  ({pipeline})", highlight=False)
    console.print(f"version  {result.version_name}  id {result.version_id}  ({version})", highlight=False)
    console.print(f"         {result.version_link}", highlight=False, soft_wrap=True)
    if result.run_id is not None:
        console.print(
            f"run      {result.run_name}  id {result.run_id}  (experiment {result.experiment})", highlight=False
        )
        console.print(f"         {result.run_link}", highlight=False, soft_wrap=True)


@handle_errors
def submit(
    config: ConfigOption = DEFAULT_CONFIG,
    package: Annotated[
        Path | None,
        typer.Option(
            help="A compiled pipeline YAML to submit. Default: compile --config now, as `kfloop compile` would, so "
            "the package always matches the config.",
        ),
    ] = None,
    run: Annotated[
        bool, typer.Option("--run/--no-run", help="Start a run of the version (--no-run: upload only).")
    ] = True,
    run_name: Annotated[str, typer.Option(help="The run's name. Default: <pipeline>-<UTC time>.")] = "",
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            metavar="NAME=VALUE",
            help="A run parameter, as in the Kubeflow UI's run form (repeatable): framework, epochs, learning_rate, "
            "batch_size, early_stopping_patience, seed, threshold_target, gate_tolerance, training_window, "
            "source_uri, <table>_source_uri. Unset ones keep the package's defaults (the config's values).",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="The run's experiment. Default: cluster.experiment.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end; exit 1 unless it succeeded.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up waiting after this many seconds.")] = 6 * 3600,
) -> None:
    """Upload the training pipeline to Kubeflow Pipelines and start a run (cluster.kfp_host, cluster.kfp_auth).

    Idempotent: the version is named <pipeline>-<sha256 of the package, 12 digits>, so submitting the same
    package again reuses its version (a changed one adds a version); each submission starts a new run.
    """
    from kfloop.config import S3StorageConfig
    from kfloop.errors import ConfigError
    from kfloop.pipelines.kfp_client import kfp_host
    from kfloop.pipelines.submit import read_package, run_arguments, submit
    from kfloop.pipelines.training import pipeline_name

    cfg = load(config)
    require_role(cfg, "run")
    kfp_host(cfg.cluster)  # a missing host fails before the compile
    if not isinstance(cfg.storage, S3StorageConfig):
        raise ConfigError(
            "storage: a pipeline on a cluster reads and writes its workspace in S3; set storage.type: s3 (e.g. "
            "examples/fraud/kfloop.cluster.yaml)"
        )
    with tempfile.TemporaryDirectory(prefix="kfloop-submit-") as tmp:
        if package is None:
            from kfloop.pipelines.compile import compile_training

            package = compile_training(cfg, Path(tmp) / f"{pipeline_name(cfg)}.yaml", config_path=str(config))
        pkg = read_package(package)
        arguments = run_arguments(cfg, pkg, param or [])
        result = submit(
            cfg,
            pkg,
            run=run,
            run_name=run_name or None,
            arguments=arguments,
            experiment=experiment or None,
            wait=timeout if wait and run else None,
            on_started=_print_submission,
        )
    if result.run_id is None:
        _print_submission(result)  # upload only: nothing was started
        return
    if result.run_state == "SUCCEEDED":
        console.print("[green]run succeeded[/]")
    elif result.run_state is not None:
        from kfloop.errors import PipelineError

        detail = f": {result.run_error}" if result.run_error else ""
        raise PipelineError(f"run {result.run_id} ended {result.run_state}{detail}")
