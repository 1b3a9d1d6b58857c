"""Starting the training pipeline for a retrain: locally (``kfloop run`` on kfp.local) or on Kubeflow.

A launcher only starts a run and names it; whether to start one is :mod:`kfloop.monitoring.retrain`'s call.
The pipeline itself ingests the configured source (the fresh data), trains, and its gate decides promotion;
its deploy step rolls a promoted version out (the hot switch of a running ``kfloop serve`` locally, the
InferenceService on a cluster), so the trigger never touches serving.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from kfloop.config import Config
from kfloop.errors import ConfigError, PipelineError
from kfloop.layout import local_workdir, retrain_log_path


class Launcher(Protocol):
    """Starts one run of the training pipeline named ``run_name``; returns what the audit records of it
    (at least ``run_id``)."""

    def start(self, config: Config, run_name: str) -> dict: ...


class LocalLauncher:
    """``kfloop run -c CONFIG`` in a process of its own: detached by default (the pipeline takes minutes and
    must outlive a ``kfloop monitor check`` that exits), or waited for (``wait``: tests, scripts)."""

    def __init__(self, config_path: Path, *, wait: bool = False) -> None:
        self.config_path = Path(config_path)
        self.wait = wait

    def start(self, config: Config, run_name: str) -> dict:
        log_path = retrain_log_path(local_workdir(config.storage.type, config.storage.root), run_name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "kfloop", "run", "-c", str(self.config_path)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        run = {"run_id": run_name, "where": "local", "pid": proc.pid, "log": str(log_path)}
        if self.wait:
            code = proc.wait()
            if code != 0:
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise PipelineError(f"retrain run {run_name} failed (exit {code}); last lines of {log_path}:\n{tail}")
            run["exit_code"] = code
        return run


class ClusterLauncher:
    """A run of the compiled pipeline through the Kubeflow Pipelines API (``cluster.kfp_host``) in
    ``cluster.experiment``: the same package ``kfloop compile`` writes and the UI would upload."""

    def start(self, config: Config, run_name: str) -> dict:
        from kfp import Client

        host = config.cluster.kfp_host
        if not host:
            raise ConfigError("monitoring.retrain.run_on is cluster but cluster.kfp_host is not set")
        package = Path(config.monitoring.retrain.pipeline_package)
        if not package.is_file():
            raise ConfigError(f"monitoring.retrain.pipeline_package: {package} does not exist (run `kfloop compile`)")
        with contextlib.redirect_stdout(sys.stderr):  # kfp prints links: stdout may carry a command's JSON
            result = Client(host=host).create_run_from_pipeline_package(
                str(package), arguments={}, run_name=run_name, experiment_name=config.cluster.experiment
            )
        return {
            "run_id": result.run_id,
            "run_name": run_name,
            "where": "cluster",
            "experiment": config.cluster.experiment,
        }


def launcher_for(config: Config, config_path: Path) -> Launcher:
    """The launcher ``monitoring.retrain.run_on`` names."""
    return ClusterLauncher() if config.monitoring.retrain.run_on == "cluster" else LocalLauncher(config_path)
