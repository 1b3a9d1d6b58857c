"""The project image (Dockerfile). No Docker engine runs here, so the image itself cannot be built: the
Dockerfile is checked for what the cluster relies on (multi-stage, a non-root user, an exact base release, every
package directory copied, the CPU torch pin), and the wheel is installed into a fresh venv the way its build
stage does (the stack comes from this project's venv instead of PyPI) to run every entrypoint the image is
called with: the CronWorkflows' `kfloop …` commands, the InferenceService's `python3 -m kfloop.serving …`, and a
compiled pipeline step through kfp's own executor, exactly as its container command runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from kfloop.config import load_config
from kfloop.config.run_parameters import run_parameter_defaults
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DOCKERFILE = REPO / "Dockerfile"
COMPILED = REPO / "pipelines" / "compiled"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per instruction, continuation lines joined and comments dropped, as Docker reads it."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2]) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.MULTILINE)]


def test_the_dockerfile_builds_a_non_root_multi_stage_image_of_every_package() -> None:
    steps = _instructions()
    froms = [rest for op, rest in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build") and "AS" not in froms[1]
    (base,) = [rest for op, rest in steps if op == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert "latest" not in DOCKERFILE.read_text()
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][1] :]
    users = [rest for op, rest in runtime if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users  # numeric: runAsNonRoot can check it
    copied = {rest.split()[0] for op, rest in steps if op == "COPY" and not rest.startswith("--from")}
    package_dirs = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    assert package_dirs <= copied, package_dirs - copied  # every directory the wheel is built from
    torch_pin = re.search(r'"torch==([\d.]+)"', (REPO / "Makefile").read_text())
    assert torch_pin and f'"torch=={torch_pin[1]}"' in DOCKERFILE.read_text()  # the same CPU wheel as make
    assert "install_extension('httpfs')" in DOCKERFILE.read_text()  # the S3 offline store's DuckDB extension


@pytest.fixture(scope="module")
def fresh(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed as the build stage installs it; its dependencies come from this
    project's venv through a .pth (the image gets them from PyPI)."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(project_wheel),
        ],
        check=True,
        timeout=300,
    )
    return venv


def _run(venv: Path, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)


def test_the_installed_wheel_is_what_runs(fresh: Path, tmp_path: Path) -> None:
    out = _run(fresh, ["python3", "-c", "import kfloop, kfloop.serving; print(kfloop.__file__)"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith(str(fresh)), out.stdout + out.stderr
    version = _run(fresh, ["kfloop", "--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("kfloop "), version.stderr


def test_the_scheduled_jobs_commands_run(fresh: Path, tmp_path: Path) -> None:
    jobs = [yaml.safe_load(p.read_text()) for p in sorted((COMPILED / "schedules").glob("*.yaml"))]
    containers = [t["container"] for j in jobs for t in j["spec"]["workflowSpec"]["templates"] if "container" in t]
    assert len(containers) >= 2
    for c in containers:
        argv = [*c["command"], *[a for a in c["args"] if not a.startswith("/")], "--help"]
        argv = [a for a in argv if a != "-c"]  # the config path points into the pod; --help needs none
        out = _run(fresh, argv, tmp_path)
        assert out.returncode == 0 and "Usage" in out.stdout, f"{argv}: {out.stderr[-1500:]}"


def test_an_installed_kfloop_renders_its_own_helm_chart(fresh: Path, tmp_path: Path) -> None:
    """`kfloop deploy` works from a pip-installed kfloop, outside a checkout: the chart ships in the wheel."""
    config = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
    out = _run(fresh, ["kfloop", "deploy", "-c", str(config), "--dry-run"], tmp_path)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "kind: CronWorkflow" in out.stdout and "kind: NetworkPolicy" in out.stdout
    lint = _run(fresh, ["kfloop", "chart", "lint", "-c", str(config)], tmp_path)
    assert lint.returncode == 0 and "clean" in lint.stdout, lint.stdout + lint.stderr


@pytest.mark.parametrize("component", ["predictor", "transformer"])
def test_the_inference_service_commands_run(fresh: Path, tmp_path: Path, component: str) -> None:
    out = _run(fresh, ["python3", "-m", "kfloop.serving", component, "--help"], tmp_path)
    assert out.returncode == 0 and "usage" in out.stdout.lower(), out.stderr[-1500:]


def test_the_distributed_training_workers_command_runs(fresh: Path, tmp_path: Path) -> None:
    """What every pod of a PyTorchJob runs (training.workers > 1 on a cluster: kfloop.kube.train_job)."""
    from kfloop.training.launch import IMAGE_PYTHON, WORKER_MODULE

    out = _run(fresh, [IMAGE_PYTHON, "-m", WORKER_MODULE, "--help"], tmp_path)
    assert out.returncode == 0 and "--training-set" in out.stdout, out.stderr[-1500:]


def test_a_compiled_pipeline_step_runs_through_kfps_executor(fresh: Path, tmp_path: Path) -> None:
    """The config step's container command from the compiled package, run as the pod runs it."""
    spec = next(yaml.safe_load_all((COMPILED / "training.yaml").read_text()))
    container = spec["deploymentSpec"]["executors"]["exec-config-component"]["container"]
    config = load_config(REPO / "examples" / "fraud" / "kfloop.cluster.yaml")
    defaults = run_parameter_defaults(config)
    config_json = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    output = tmp_path / "outputs" / "executor_output.json"
    executor_input = {
        "inputs": {
            "parameterValues": {
                "config_json": config_json,
                "defaults_json": json.dumps(defaults, sort_keys=True),
                **defaults,
                "epochs": 7,  # the run form changed one
            }
        },
        "outputs": {
            "parameters": {"Output": {"outputFile": str(tmp_path / "outputs" / "Output")}},
            "outputFile": str(output),
        },
    }
    args = [a if a != "{{$}}" else json.dumps(executor_input) for a in container["args"]]
    out = _run(fresh, [*container["command"], *args], tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resolved = json.loads(json.loads(output.read_text())["parameterValues"]["Output"])  # what the next step reads
    assert resolved["training"]["epochs"] == 7 and resolved["project"] == config.project
