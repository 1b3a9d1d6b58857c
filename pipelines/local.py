"""Run the training pipeline on this machine with ``kfp.local`` (SubprocessRunner, no venv per task).

Steps run as subprocesses of the current interpreter, so kfloop must be installed in it (as the
project image has it on a cluster). Task logs go to a log file; the summary comes from the outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from kfp import local

from kfloop.config import Config
from kfloop.errors import PipelineError
from kfloop.layout import PIPELINE_ROOT, RUN_LOG
from kfloop.pipelines.training import build_training_pipeline


@dataclass(frozen=True)
class LocalRun:
    """Outcome of a local pipeline run: each step's main output, read from the run's artifacts."""

    ingest: dict
    quality: dict
    features: list
    materialized: list
    training_set: dict
    model: dict
    deploy: dict
    log_path: Path
    pipeline_root: Path


def _latest_run_dir(root: Path, before: set[Path]) -> Path | None:
    runs = [p for p in root.iterdir() if p.is_dir() and p not in before]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _returned(task_dir: Path) -> list:
    """A step's returned JSON string, from its executor output."""
    out = _read_json(task_dir / "executor_output.json").get("parameterValues", {}).get("Output")
    return json.loads(out) if out else []


def run_local(config: Config, workdir: Path, source_uri: str | None = None) -> LocalRun:
    """Execute the pipeline function with kfp.local; raises PipelineError with the log tail on failure."""
    root = (workdir / PIPELINE_ROOT).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = workdir / RUN_LOG
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline = build_training_pipeline(config, retries=0)
    kwargs = {"source_uri": source_uri} if source_uri else {}
    before = {p for p in root.iterdir() if p.is_dir()}
    with (
        open(log_path, "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
    ):
        # Resources, display names and the image are cluster settings that kfp.local ignores by design.
        warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
        try:
            pipeline(**kwargs)
        except Exception as err:  # kfp raises RuntimeError naming the failed task
            failure = err
        else:
            failure = None
    run_dir = _latest_run_dir(root, before)
    quality = _read_json(run_dir / "validate-component" / "report") if run_dir else {}
    if failure is not None:
        raise PipelineError(_failure_message(failure, quality, log_path))
    assert run_dir is not None
    return LocalRun(
        ingest=_read_json(run_dir / "ingest-component" / "run_manifest"),
        quality=quality,
        features=_returned(run_dir / "features-component"),
        materialized=_returned(run_dir / "materialize-component"),
        training_set=_read_json(run_dir / "training-set-component" / "training_set"),
        model=_read_json(run_dir / "train-component" / "model"),
        deploy=_returned(run_dir / "deploy-component") or {},
        log_path=log_path,
        pipeline_root=root,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP_ERROR = re.compile(r"kfloop\.errors\.\w+: (.+)")


def _failure_message(failure: Exception, quality: dict, log_path: Path) -> str:
    """The reason a user can act on: the gate's failing checks, or the step's own kfloop error line."""
    if quality and not quality.get("gate_passed", True):
        failing = [c for c in quality["checks"] if c["severity"] == "error" and not c["passed"]]
        lines = []
        for c in failing:
            ex = f"; e.g. {json.dumps(c['examples'][:3], default=str)}" if c.get("examples") else ""
            lines.append(f"  {c['check']}: {c['message']} ({c['failed']:,} of {c['total']:,} failing){ex}")
        return "data contract gate failed; training did not run:\n" + "\n".join(lines)
    log = _ANSI.sub("", log_path.read_text(errors="replace"))
    found = _STEP_ERROR.findall(log)
    step = re.search(r"Inner task failed: '([^']+)'", _ANSI.sub("", str(failure)))
    where = f"step {step.group(1)}" if step else "pipeline"
    if found:
        return f"{where} failed: {found[-1].strip()} (task logs: {log_path})"
    tail = "".join(log.splitlines(keepends=True)[-15:])
    return f"{where} failed: {_ANSI.sub('', str(failure))}\n--- last lines of {log_path} ---\n{tail}"


def project_python_on_path() -> None:
    """Make ``python3`` in task commands resolve to this interpreter's environment."""
    import sys

    bindir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
