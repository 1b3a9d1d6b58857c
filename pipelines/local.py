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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kfp import local

from kfloop.config import Config
from kfloop.errors import ConfigError, PipelineError
from kfloop.layout import PIPELINE_ROOT, RUN_LOG
from kfloop.lineage.run import PIPELINE_RUN_ENV
from kfloop.pipelines.training import build_training_pipeline, table_uri_parameter
from kfloop.step import new_run_id


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
    #: Each attribute table of ``features.tables`` that ran: name → {"ingest": run manifest, "quality": report}.
    tables: dict[str, dict] = field(default_factory=dict)


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment (the task subprocesses inherit it), restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _latest_run_dir(root: Path, before: set[Path]) -> Path | None:
    runs = [p for p in root.iterdir() if p.is_dir() and p not in before]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _returned(task_dir: Path) -> list:
    """A step's returned JSON string, from its executor output."""
    out = _read_json(task_dir / "executor_output.json").get("parameterValues", {}).get("Output")
    return json.loads(out) if out else []


def _by_dataset(run_dir: Path, component: str, artifact: str) -> dict[str, dict]:
    """The ``artifact`` JSON of every task of ``component``, keyed by the dataset it names. kfp.local names a
    task's directory by its task name: the component's name for its first task, then ``<name>-2``, ``<name>-3``…
    in the order the pipeline adds them (the main source's first, then the tables'); the dataset key does not
    depend on that order."""
    found = {}
    for task_dir in run_dir.iterdir():
        if re.fullmatch(rf"{re.escape(component)}(-\d+)?", task_dir.name):
            body = _read_json(task_dir / artifact)
            if body.get("dataset"):
                found[body["dataset"]] = body
    return found


def _table_uri_kwargs(config: Config, table_uris: dict[str, str]) -> dict[str, str]:
    """``table_uris`` (table name → URI for this run) as the pipeline's ``<table>_source_uri`` parameters."""
    known = {t.name for t in config.features.tables}
    unknown = sorted(set(table_uris) - known)
    if unknown:
        have = f"known tables: {', '.join(sorted(known))}" if known else "the config declares no features.tables"
        raise ConfigError(f"no attribute table {', '.join(map(repr, unknown))} in features.tables ({have})")
    return {table_uri_parameter(name): uri for name, uri in table_uris.items() if uri}


def _display_names(pipeline) -> dict[str, str]:
    """Task name (``ingest-component-2``) → the name the Kubeflow UI shows (``ingest (stations)``)."""
    try:
        return {name: task.task_info.name for name, task in pipeline.pipeline_spec.root.dag.tasks.items()}
    except AttributeError:  # another kfp's spec layout: the task names stay as they are
        return {}


def run_local(
    config: Config,
    workdir: Path,
    source_uri: str | None = None,
    table_uris: dict[str, str] | None = None,
    parameters: dict[str, object] | None = None,
) -> LocalRun:
    """Execute the pipeline function with kfp.local; raises PipelineError with the log tail on failure.
    ``source_uri`` and ``table_uris`` (attribute table name → URI) override the files the config names;
    ``parameters`` sets run parameters (``kfloop.config.run_parameters``), as the Kubeflow UI's run form does."""
    kwargs: dict[str, object] = {"source_uri": source_uri} if source_uri else {}
    kwargs |= _table_uri_kwargs(config, table_uris or {})
    kwargs |= parameters or {}
    root = (workdir / PIPELINE_ROOT).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = workdir / RUN_LOG
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline = build_training_pipeline(config, retries=0)
    before = {p for p in root.iterdir() if p.is_dir()}
    # every step's lineage events name this run as their parent (the task subprocesses inherit the variable)
    run_name = os.environ.get(PIPELINE_RUN_ENV) or f"{config.project}-training-{new_run_id()}"
    with (
        _environ(PIPELINE_RUN_ENV, run_name),
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
    ingested = _by_dataset(run_dir, "ingest-component", "run_manifest") if run_dir else {}
    reports = _by_dataset(run_dir, "validate-component", "report") if run_dir else {}
    main = config.source.dataset
    tables = {
        t.name: {"ingest": ingested.get(t.name, {}), "quality": reports.get(t.name, {})}
        for t in config.features.tables
        if t.name in ingested or t.name in reports
    }
    quality = reports.get(main, {})
    if failure is not None:
        gates = {"": quality} | {name: r["quality"] for name, r in tables.items()}
        raise PipelineError(_failure_message(failure, gates, log_path, _display_names(pipeline)))
    assert run_dir is not None
    return LocalRun(
        ingest=ingested.get(main, {}),
        quality=quality,
        features=_returned(run_dir / "features-component"),
        materialized=_returned(run_dir / "materialize-component"),
        training_set=_read_json(run_dir / "training-set-component" / "training_set"),
        model=_read_json(run_dir / "train-component" / "model"),
        deploy=_returned(run_dir / "deploy-component") or {},
        log_path=log_path,
        pipeline_root=root,
        tables=tables,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP_ERROR = re.compile(r"kfloop\.errors\.\w+: (.+)")


def _failing_checks(quality: dict, indent: str) -> list[str]:
    lines = []
    for c in quality["checks"]:
        if c["severity"] == "error" and not c["passed"]:
            ex = f"; e.g. {json.dumps(c['examples'][:3], default=str)}" if c.get("examples") else ""
            lines.append(f"{indent}{c['check']}: {c['message']} ({c['failed']:,} of {c['total']:,} failing){ex}")
    return lines


def _failure_message(
    failure: Exception, gates: dict[str, dict], log_path: Path, display: dict[str, str] | None = None
) -> str:
    """The reason a user can act on: each failed gate's failing checks (``gates``: table name, "" for the main
    source → its quality report), or the step's own kfloop error line (``display``: task → UI name)."""
    failed = {name: q for name, q in gates.items() if q and not q.get("gate_passed", True)}
    if len(failed) == 1:
        name, quality = next(iter(failed.items()))
        where = f" on table {name}" if name else ""
        return f"data contract gate failed{where}; training did not run:\n" + "\n".join(_failing_checks(quality, "  "))
    if failed:
        lines = ["data contract gates failed; training did not run:"]
        for name, quality in failed.items():
            lines.append(f"  table {name}:" if name else f"  source ({quality.get('dataset', '?')}):")
            lines += _failing_checks(quality, "    ")
        return "\n".join(lines)
    log = _ANSI.sub("", log_path.read_text(errors="replace"))
    found = _STEP_ERROR.findall(log)
    step = re.search(r"Inner task failed: '([^']+)'", _ANSI.sub("", str(failure)))
    shown = (display or {}).get(step.group(1)) if step else None
    where = (f"step {shown!r} ({step.group(1)})" if shown else f"step {step.group(1)}") if step else "pipeline"
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
