"""Importing kfloop changes nothing outside it: not ``os.environ``, not ``sys.argv``.

The entry points do what the package root and ``kfloop.serving`` once did at import: the CLI and
``python -m kfloop.serving`` drop a Feast multiprocess-metrics dir inherited from a parent process, and run
with a bare ``sys.argv`` while KServe (which parses ``sys.argv`` when first imported) is imported.
Each case runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kfloop._prometheus import NAMES, drop_inherited_feast_dir

FEAST_DIR = "/tmp/feast_metrics_x1"  # what Feast sets in a parent; its children inherit it
INHERITED = dict.fromkeys(NAMES, FEAST_DIR)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    run = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.parametrize(
    "env", [{}, INHERITED, {"PROMETHEUS_MULTIPROC_DIR": "/srv/metrics"}], ids=["plain", "inherited", "user"]
)
def test_importing_kfloop_leaves_os_environ_alone(env: dict[str, str]) -> None:
    code = (
        "import os, sys\nbefore = dict(os.environ)\nimport kfloop\n"
        "assert 'prometheus_client.values' in sys.modules\n"
        "assert dict(os.environ) == before, set(before.items()) ^ set(os.environ.items())\nprint('ok')"
    )
    assert _python(code, env).stdout.strip() == "ok"


def test_importing_the_serving_entry_module_leaves_sys_argv_alone() -> None:
    """Not read, not replaced: a list that fails when read stands in for sys.argv during the import."""
    code = (
        "import sys\n"
        "class Untouchable(list):\n"
        "    def __getitem__(self, i): raise AssertionError('sys.argv read')\n"
        "    def __iter__(self): raise AssertionError('sys.argv read')\n"
        "    def __len__(self): raise AssertionError('sys.argv read')\n"
        "argv = sys.argv = Untouchable(['prog', 'transformer', '--config', 'x.yaml'])\n"
        "import kfloop.serving, kfloop.serving.__main__\n"
        "assert sys.argv is argv\nassert 'kserve' not in sys.modules\nprint('ok')"
    )
    assert _python(code, {}).stdout.strip() == "ok"


def test_the_cli_entry_point_drops_an_inherited_feast_dir_and_restores_sys_argv() -> None:
    code = (
        "import atexit, os, sys\n"
        "argv = sys.argv = ['kfloop', '--version']\n"
        f"atexit.register(lambda: print([os.environ.get(n) for n in {NAMES!r}], sys.argv is argv))\n"
        "from kfloop.cli import main\nmain()"
    )
    lines = _python(code, INHERITED).stdout.strip().splitlines()
    assert lines == ["kfloop 0.1.0", f"{[None] * len(NAMES)} True"]


def test_only_a_feast_temp_dir_is_dropped() -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": "/tmp/feast_metrics_ab/", "PROMETHEUS_MULTIPROCESS_DIR": "/srv/metrics"}
    drop_inherited_feast_dir(env)
    assert env == {"PROMETHEUS_MULTIPROCESS_DIR": "/srv/metrics"}
