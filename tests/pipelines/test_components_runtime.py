"""Runtime and compile apart: the stage cores and the CLI run without kfp; only the KFP wrappers
(``kfloop.pipelines.components``) and the pipeline modules import it.

Each check runs in a fresh interpreter, since this test process has imported kfp already.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap

import kfloop.components
from kfloop.pipelines import components as wrappers

STAGES = sorted(f"kfloop.components.{m.name}" for m in pkgutil.iter_modules(kfloop.components.__path__))


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_stage_core_imports_without_kfp() -> None:
    assert len(STAGES) >= 8, STAGES  # ingest … deploy: the listing found the package
    loaded = _python(
        f"""
        import importlib, json, sys
        found = {{}}
        for name in {STAGES!r}:
            importlib.import_module(name)
            found[name] = sorted(m for m in ("kfp", "kfp.dsl") if m in sys.modules)
        print(json.dumps(found))
        """
    )
    assert loaded == {name: [] for name in STAGES}, f"a stage core imports kfp: {loaded}"


def test_stage_cores_define_no_kfp_component() -> None:
    """The wrappers live in one module; every stage's entrypoint they call exists in its core."""
    for name in STAGES:
        module = importlib.import_module(name)
        assert not [n for n in vars(module) if n.endswith("_component")], name
    for name in wrappers.__all__:
        func = getattr(wrappers, name)
        assert func.__module__ == "kfloop.pipelines.components"
        for line in (raw.strip() for raw in inspect.getsource(func).splitlines()):
            if line.startswith("from kfloop.components."):
                module_name, names = line.removeprefix("from ").split(" import ")
                module = importlib.import_module(module_name)
                for entry in names.split(","):
                    assert callable(getattr(module, entry.strip())), f"{name}: {module_name}.{entry.strip()}"


def test_kfloop_ingest_help_and_command_path_skip_kfp() -> None:
    """``kfloop ingest --help`` and the modules ``kfloop ingest`` runs (CLI + ingest core) load no kfp."""
    loaded = _python(
        """
        import json, sys
        from kfloop.cli import main
        sys.argv = ["kfloop", "ingest", "--help"]
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code
        help_kfp = "kfp" in sys.modules
        from kfloop.components.ingest import ingest  # what the command imports when it runs
        print(json.dumps({"code": code, "help": help_kfp, "command": "kfp" in sys.modules}))
        """
    )
    assert loaded == {"code": 0, "help": False, "command": False}
