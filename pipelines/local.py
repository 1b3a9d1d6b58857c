"""Run the training pipeline on this machine with ``kfp.local`` (SubprocessRunner, no venv per task).

Steps run as subprocesses of the current interpreter, so kfloop must be installed in it (as the
project image has it on a cluster). Task logs go to a log file; the summary comes from the outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from kfloop.pipelines.training import build_training_pipeline
from kfp import local

from kfloop.config import Config
from kfloop.errors import PipelineError


@dataclass(frozen=True)
class LocalRun:
    """Outcome of a local pipeline run."""

    ingest: dict
    log_path: Path
    pipeline_root: Path


def run_local(config: Config, workdir: Path, source_uri: str | None = None) -> LocalRun:
    """Execute the pipeline function with kfp.local; raises PipelineError with the log tail on failure."""
    root = (workdir / "pipeline_root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "last-run.log"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline = build_training_pipeline(config, retries=0)
    kwargs = {"source_uri": source_uri} if source_uri else {}
    with (
        open(log_path, "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
    ):
        # Resources, display names and the image are cluster settings that kfp.local ignores by design.
        warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
        try:
            output = pipeline(**kwargs)
        except Exception as err:  # kfp raises RuntimeError naming the failed task
            failure = err
        else:
            failure = None
    if failure is not None:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise PipelineError(f"pipeline failed: {failure}\n--- last lines of {log_path} ---\n{tail}")
    manifest = json.loads(Path(output.output.path).read_text())
    return LocalRun(ingest=manifest, log_path=log_path, pipeline_root=root)


def project_python_on_path() -> None:
    """Make ``python3`` in task commands resolve to this interpreter's environment."""
    import sys

    bindir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
