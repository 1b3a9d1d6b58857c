"""The one wrapper every step uses: :func:`emits` turns a stage function into an OpenLineage run (START, then
COMPLETE with its datasets, or FAIL with the error), and :func:`pipeline_parent` names the pipeline run the steps
inside it belong to (their parent run facet).

What a step read and wrote comes from its result, by the step's entry in :mod:`kfloop.lineage.steps`; nothing
here can fail the step: an error while describing or sending is logged and the step goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import traceback
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from kfloop.config import Config
from kfloop.storage import Storage

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: The pipeline run (name) the steps of this process belong to, besides KFLOOP_PIPELINE_RUN in the environment.
_pipeline: contextvars.ContextVar[str | None] = contextvars.ContextVar("kfloop_lineage_pipeline", default=None)
#: The environment variables that name a parent run: kfloop's pipeline run name, or OpenLineage's
#: ``<namespace>/<job>/<run uuid>`` (what other OpenLineage integrations pass down).
PIPELINE_RUN_ENV = "KFLOOP_PIPELINE_RUN"
PARENT_ENV = "OPENLINEAGE_PARENT_ID"


def preload() -> None:
    """Import the event builders now: they are imported on a step's first event, and in a long-running process
    (the stream worker's archives) that import would hold the interpreter for a few hundred milliseconds later."""
    import kfloop.lineage.events
    import kfloop.lineage.steps
    import kfloop.lineage.transport  # noqa: F401


def pipeline_job(config: Config) -> str:
    """The parent job of the steps: the training pipeline (its KFP name, ``kfloop.pipelines.training``)."""
    return f"{config.project}-training"


@contextlib.contextmanager
def pipeline_parent(run_name: str) -> Iterator[None]:
    """Steps run inside this block are children of pipeline run ``run_name`` (``kfloop run``, a retrain)."""
    token = _pipeline.set(run_name)
    try:
        yield
    finally:
        _pipeline.reset(token)


def _parent(config: Config, namespace: str, arguments: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    from kfloop.lineage.events import Parent, run_uuid

    given = environ.get(PARENT_ENV, "")
    if given.count("/") >= 2:
        rest, run_id = given.rsplit("/", 1)
        parent_ns, job = rest.rsplit("/", 1)
        return Parent(parent_ns, job, run_id)
    # the environment first: `kfloop run` names its run there for every step (train's own argument, the KFP
    # placeholder, is a name kfp.local makes up); on a cluster only train has a name, its argument
    name = environ.get(PIPELINE_RUN_ENV) or _pipeline.get() or arguments.get("pipeline_run")
    if not name:
        return None
    job = pipeline_job(config)
    return Parent(namespace, job, run_uuid(namespace, job, str(name)))


class StepRun:
    """The events of one run of one step, sent as they happen."""

    def __init__(self, config: Config, storage: Storage, job: str, kfloop_run_id: str, parent: Any) -> None:
        from kfloop.lineage.events import RunRef
        from kfloop.lineage.transport import RunTransport

        self.config = config
        self.storage = storage
        lineage = config.governance.lineage
        self.ref = RunRef(lineage.namespace_for(config.project), job, kfloop_run_id, parent)
        date = datetime.now(UTC).strftime("%Y-%m-%d")
        self.transport = RunTransport(lineage, storage, date, kfloop_run_id, os.environ)

    def emit(self, state: str, inputs: list | None = None, outputs: list | None = None, error: Any = None) -> None:
        from kfloop.lineage.events import build

        try:
            self.transport.send(build(state, self.ref, inputs=inputs, outputs=outputs, error=error))
        except Exception:  # a bug in describing the run must not fail the step
            log.exception("lineage: could not emit %s of %s", state, self.ref.job)


def _described(describe: Callable[..., tuple[list, list]], *args: Any) -> tuple[list, list]:
    try:
        return describe(*args)
    except Exception:
        log.exception("lineage: could not describe the datasets of a step; the event has none")
        return [], []


def emits(job: str) -> Callable[[F], F]:
    """Decorate a stage function ``f(config, storage, ...)``: each call is an OpenLineage run of ``job``.

    A function with a ``run_id`` parameter gets the run's kfloop run id when the caller gave none, so the lake
    files, reports and events of one run share it."""

    def wrap(func: F) -> F:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            config: Config = bound.arguments["config"]
            if config.governance.lineage.transport == "none":
                return func(*args, **kwargs)
            from kfloop.lineage.steps import STEPS
            from kfloop.step import new_run_id

            kfloop_run_id = bound.arguments.get("run_id") or new_run_id()
            if "run_id" in sig.parameters:
                bound.arguments["run_id"] = kfloop_run_id
            storage: Storage = bound.arguments["storage"]
            namespace = config.governance.lineage.namespace_for(config.project)
            step = StepRun(config, storage, job, kfloop_run_id, _parent(config, namespace, bound.arguments, os.environ))
            describe = STEPS[job]
            inputs, _ = _described(describe, config, storage, bound.arguments, None)
            step.emit("START", inputs)
            try:
                result = func(*bound.args, **bound.kwargs)
            except BaseException as err:
                from kfloop.lineage.facets import error

                step.emit("FAIL", inputs, error=error(err, traceback.format_exc()))
                raise
            inputs, outputs = _described(describe, config, storage, bound.arguments, result)
            step.emit("COMPLETE", inputs, outputs)
            return result

        return run  # type: ignore[return-value]

    return wrap
