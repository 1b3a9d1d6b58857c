"""Define a kfp pipeline from its function, without kfp's per-setter stack walk.

kfp's task setters (``set_cpu_limit``, ``set_env_variable``, ``set_retry`` ...) each call
``inspect.stack()`` only to name themselves in an error message. That reads the source context of every frame,
and each frame asks :func:`inspect.getmodule`, which walks ``sys.modules``: in a process that has torch,
TensorFlow or Feast imported (``kfloop run``, ``kfloop submit``, ``kfloop schedules``) defining the training
pipeline took 3 s instead of 0.1 s. While a pipeline function is traced, the same check runs without the walk
(the same ValueError for a task without a container; its message names no setter).
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kfp import dsl

__all__ = ["define_pipeline"]

_LOCK = threading.RLock()
_CHECK = "_ensure_container_spec_exists"


def _check(task: dsl.PipelineTask) -> None:
    if task.container_spec is None:
        raise ValueError(
            "this setting can only be used on single-step components, not pipelines used as components, or special "
            "components like importers."
        )


@contextlib.contextmanager
def _without_stack_walk() -> Iterator[None]:
    # the original is read under the lock: another thread's replacement is never taken for kfp's own method
    # (re-entrant: a pipeline traced while another is, in the same thread, restores what it found)
    with _LOCK:
        original = getattr(dsl.PipelineTask, _CHECK, None)
        if original is None:  # another kfp: nothing to replace
            yield
            return
        setattr(dsl.PipelineTask, _CHECK, _check)
        try:
            yield
        finally:
            setattr(dsl.PipelineTask, _CHECK, original)


def define_pipeline(func: Callable[..., Any], **options: Any) -> Any:
    """``dsl.pipeline(**options)(func)``: the kfp pipeline (a GraphComponent), traced without the stack walks."""
    with _without_stack_walk():
        return dsl.pipeline(**options)(func)
