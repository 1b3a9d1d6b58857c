"""Starting the training pipeline for a retrain: locally (``kfloop run`` on kfp.local) or on Kubeflow.

A launcher only starts a run and names it; whether to start one is :mod:`kfloop.monitoring.retrain`'s call.
The pipeline itself ingests the configured source (the fresh data), trains, and its gate decides promotion;
its deploy step rolls a promoted version out (the hot switch of a running ``kfloop serve`` locally, the
InferenceService on a cluster), so the trigger never touches serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
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
        self.processes: dict[str, subprocess.Popen] = {}  # the runs this launcher started, by run id
        self._logs: dict[str, Path] = {}

    def start(self, config: Config, run_name: str) -> dict:
        log_path = retrain_log_path(local_workdir(config.storage.type, config.storage.root), run_name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "kfloop", "run", "-c", str(self.config_path)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.processes[run_name], self._logs[run_name] = proc, log_path
        run = {"run_id": run_name, "where": "local", "pid": proc.pid, "log": str(log_path)}
        if self.wait:
            run["exit_code"] = self.join(run_name)
        return run

    def join(self, run_name: str, timeout: float | None = None) -> int:
        """Wait for a run this launcher started; raise with its log's tail when it failed or outlived
        ``timeout``. Interrupted (Ctrl-C) or timed out, the run is stopped: a waited-for run never outlives
        its waiter (a detached one, never joined, does)."""
        proc = self.processes[run_name]
        try:
            code = proc.wait(timeout=timeout)
        except BaseException:
            self.stop(run_name)
            raise
        if code != 0:
            raise PipelineError(f"retrain run {run_name} failed (exit {code}); {self._tail(run_name)}")
        return code

    def stop(self, run_name: str) -> None:
        """Stop a run this launcher started (its whole process group: kfp.local's task processes too)."""
        proc = self.processes[run_name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for run_name in self.processes:
            self.stop(run_name)

    def _tail(self, run_name: str) -> str:
        path = self._logs[run_name]
        tail = "".join(path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        return f"last lines of {path}:\n{tail}"


class ClusterLauncher:
    """A run of the compiled pipeline through the Kubeflow Pipelines API (``cluster.kfp_host``) in
    ``cluster.experiment``: the same package ``kfloop compile`` writes and the UI would upload. The client is
    ``kfloop submit``'s (:func:`kfloop.pipelines.kfp_client.kfp_client`): same host, namespace and credentials."""

    def start(self, config: Config, run_name: str) -> dict:
        from kfloop.pipelines.kfp_client import kfp_api_errors, kfp_client

        cluster = config.cluster
        if not cluster.kfp_host:
            raise ConfigError("monitoring.retrain.run_on is cluster but cluster.kfp_host is not set")
        client = kfp_client(cluster)
        with tempfile.TemporaryDirectory(prefix="kfloop-retrain-") as tmp:
            package = self._package(config, Path(tmp))
            # kfp prints links: stdout may carry a command's JSON
            with contextlib.redirect_stdout(sys.stderr), kfp_api_errors(cluster, f"the retrain run {run_name}"):
                result = client.create_run_from_pipeline_package(
                    str(package),
                    arguments={},
                    run_name=run_name,
                    experiment_name=cluster.experiment,
                    namespace=cluster.kfp_namespace,
                )
        return {
            "run_id": result.run_id,
            "run_name": run_name,
            "package": config.monitoring.retrain.pipeline_package or "compiled from the config",
            "where": "cluster",
            "experiment": config.cluster.experiment,
        }

    @staticmethod
    def _package(config: Config, tmp: Path) -> Path:
        """``pipeline_package``, or the pipeline compiled from ``config`` now (a pod has no compiled file)."""
        configured = config.monitoring.retrain.pipeline_package
        if configured is None:
            from kfloop.pipelines.compile import compile_training

            return compile_training(config, tmp / "training.yaml", config_path="the drift check's config")
        package = Path(configured)
        if not package.is_file():
            raise ConfigError(
                f"monitoring.retrain.pipeline_package: {package} does not exist (run `kfloop compile`, or leave it "
                "null to compile from the config)"
            )
        return package


def launcher_for(config: Config, config_path: Path) -> Launcher:
    """The launcher ``monitoring.retrain.run_on`` names."""
    return ClusterLauncher() if config.monitoring.retrain.run_on == "cluster" else LocalLauncher(config_path)
