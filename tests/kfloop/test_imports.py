"""Import hygiene of the config, the schema and the trainers: no import cycles, frameworks loaded lazily.

Each module imports on its own in a fresh interpreter, in either order with its former cycle partner;
statically, no import (top-level or inside a function) closes a cycle between these modules; and the
trainer seam imports torch or TensorFlow only for the framework that is asked for.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kfloop.errors import ConfigError
from kfloop.training import base

REPO = Path(__file__).resolve().parents[2]
FRAMEWORK_PACKAGES = ("torch", "tensorflow", "keras")
SLOW = pytest.mark.slow  # TensorFlow's import alone takes seconds

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "tensorflow", "keras"})))
"""


def imported_frameworks(*modules: str) -> list[str]:
    """Import ``modules`` in order in a fresh interpreter; the framework packages that got loaded."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=180, check=False, cwd=REPO
    )
    assert run.returncode == 0, f"importing {' then '.join(modules)} failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("modules", "frameworks"),
    [
        (("kfloop.schema", "kfloop.config"), []),
        (("kfloop.config", "kfloop.schema"), []),
        (("kfloop.config.source", "kfloop.schema"), []),
        (("kfloop.training.base",), []),
        (("kfloop.training.trainer",), []),
        (("kfloop.training.model_io", "kfloop.training.preprocess", "kfloop.training.metrics"), []),
        (("kfloop.training.torch_trainer", "kfloop.training.trainer"), ["torch"]),
        (("kfloop.training.trainer", "kfloop.training.torch_trainer"), ["torch"]),
        pytest.param(("kfloop.training.tf_trainer", "kfloop.training.trainer"), ["keras", "tensorflow"], marks=SLOW),
        pytest.param(("kfloop.training.trainer", "kfloop.training.tf_trainer"), ["keras", "tensorflow"], marks=SLOW),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else None,
)
def test_modules_import_alone_and_in_any_order(modules: tuple[str, ...], frameworks: list[str]) -> None:
    assert imported_frameworks(*modules) == frameworks


# --- static: the import graph between these modules has no cycle ----------------------------------------------

#: Graph nodes: the config package counts as one node (importing any of its modules runs its __init__).
NODES = {
    "kfloop.config": REPO / "kfloop" / "config",
    "kfloop.column_types": REPO / "kfloop" / "column_types.py",
    "kfloop.schema": REPO / "kfloop" / "schema.py",
    **{f"kfloop.training.{p.stem}": p for p in (REPO / "kfloop" / "training").glob("*.py") if p.stem != "__init__"},
}


def _node(module: str) -> str | None:
    for node in sorted(NODES, key=len, reverse=True):
        if module == node or module.startswith(node + "."):
            return node
    return None


def imports_of(node: str) -> set[str]:
    """Every kfloop node that ``node``'s source imports, at module level or inside functions."""
    path = NODES[node]
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    out: set[str] = set()
    for file in files:
        for stmt in ast.walk(ast.parse(file.read_text())):
            if isinstance(stmt, ast.Import):
                names = [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                # ``from kfloop.training import model_io`` imports the submodule kfloop.training.model_io
                names = [stmt.module, *(f"{stmt.module}.{alias.name}" for alias in stmt.names)]
            else:
                continue
            out.update(n for n in map(_node, names) if n is not None and n != node)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_between_config_schema_and_trainers() -> None:
    graph = {node: imports_of(node) for node in NODES}
    assert "kfloop.schema" in graph["kfloop.config"]  # the config checks contract rules against the schema …
    assert "kfloop.config" not in graph["kfloop.schema"]  # … and the schema no longer imports the config
    for framework_module in base.TRAINERS.values():  # the framework modules build on the base, not the trainer
        assert "kfloop.training.base" in graph[framework_module]
        assert "kfloop.training.trainer" not in graph[framework_module]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


# --- the seam ---------------------------------------------------------------------------------------------------


def test_one_map_names_every_configurable_framework() -> None:
    from typing import get_args

    from kfloop.config import TrainingConfig

    assert tuple(get_args(TrainingConfig.model_fields["framework"].annotation)) == base.FRAMEWORKS
    assert base.TRAINERS == {"pytorch": "kfloop.training.torch_trainer", "tensorflow": "kfloop.training.tf_trainer"}


def test_an_unknown_framework_is_a_config_error_and_imports_nothing() -> None:
    with pytest.raises(ConfigError, match=r"training.framework 'jax' is not one of pytorch, tensorflow"):
        base.trainer_for("jax")
    with pytest.raises(ConfigError, match="not one of"):
        base.check_framework("")


@pytest.mark.parametrize("framework", ["pytorch", pytest.param("tensorflow", marks=SLOW)])
def test_each_framework_module_provides_the_trainer_protocol(framework: str) -> None:
    module = base.trainer_for(framework)
    assert module.__name__ == base.TRAINERS[framework]  # type: ignore[attr-defined]
    for name, member in inspect.getmembers(base.Trainer, inspect.isfunction):
        if name.startswith("_"):
            continue
        implementation = getattr(module, name)  # called positionally: the same number of parameters
        want = len(inspect.signature(member).parameters) - 1  # without self
        assert len(inspect.signature(implementation).parameters) == want, f"{framework}: {name}"
    versions = module.versions()
    assert versions and all(isinstance(v, str) and v for v in versions.values())
