"""define_pipeline: kfp's pipeline, traced without kfp's stack walk in each task setter, same checks."""

from pathlib import Path

import pytest
from kfp import compiler, dsl

from kfloop.pipelines.define import define_pipeline


@dsl.component
def add(a: int, b: int) -> int:
    return a + b


def test_the_pipeline_compiles_as_kfps_own_and_the_setters_check_as_before(tmp_path: Path) -> None:
    """The same spec as ``dsl.pipeline``; a setter on a task without a container still fails, and kfp's own
    check is back in place afterwards (only the tracing inside define_pipeline uses the cheap one)."""
    original = dsl.PipelineTask._ensure_container_spec_exists

    def flow(a: int = 1) -> int:
        return add(a=a, b=2).set_cpu_limit("1").set_env_variable("X", "1").output

    ours = define_pipeline(flow, name="p")
    theirs = dsl.pipeline(name="p")(flow)
    compiler.Compiler().compile(ours, str(tmp_path / "ours.yaml"))
    compiler.Compiler().compile(theirs, str(tmp_path / "theirs.yaml"))
    assert (tmp_path / "ours.yaml").read_text() == (tmp_path / "theirs.yaml").read_text()

    def outer(a: int = 1) -> None:
        ours(a=a).set_cpu_limit("1")  # a pipeline used as a component has no container to limit

    with pytest.raises(ValueError, match="can only be used on single-step components"):
        define_pipeline(outer, name="outer")
    assert dsl.PipelineTask._ensure_container_spec_exists is original
