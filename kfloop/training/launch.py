"""Starting the processes of a distributed training run (``training.workers`` > 1): the one worker command every
process runs, where they run, and, without a cluster, torchrun with ``workers`` local processes.

Every process runs ``python -m kfloop.components.train`` for the training set the train step chose (a newer set
written meanwhile must not split the run), with the config as an argument as the pipeline passes it to a step.
torchrun (``--standalone``: a rendezvous on a free local port) and the Kubeflow Training Operator's PyTorchJob
give each one the ``WORLD_SIZE``/``RANK``/``MASTER_ADDR``/``MASTER_PORT`` the worker joins its group with
(``kfloop.training.distributed``). torchrun ends every process when one fails, so a failed rank never leaves the
others waiting.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kfloop.config import Config
from kfloop.errors import PipelineError

#: The train stage's module: its ``main`` is the worker entrypoint.
WORKER_MODULE = "kfloop.components.train"
#: The interpreter of the project image on every pod (the venv's, first on PATH).
IMAGE_PYTHON = "python3"
#: Set in every pod by Kubernetes: running inside a cluster.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
#: Lines of the failed rank's output a failure quotes (its traceback is at the end).
TAIL_LINES = 40
#: torchrun's agent log line naming the first process that failed.
_ROOT_CAUSE = re.compile(r"failed \(exitcode: (?P<code>-?\d+)\) local_rank: (?P<rank>\d+)")


def worker_args(config_json: str, training_set: str, pipeline_run: str) -> list[str]:
    """The interpreter's arguments of a worker: ``-m kfloop.components.train`` and what it trains on."""
    return [
        "-m",
        WORKER_MODULE,
        "--config-json",
        config_json,
        "--training-set",
        training_set,
        "--pipeline-run",
        pipeline_run,
    ]


def on_cluster(config: Config, environ: Mapping[str, str]) -> bool:
    """A PyTorchJob (True) or local processes: a job needs a pod to submit it from and a workspace its pods can
    reach (S3); a local workspace trains on this machine, in a pod or not."""
    return bool(environ.get(IN_CLUSTER_ENV)) and config.storage.type != "local"


def torchrun_command(workers: int, args: list[str], log_dir: Path) -> list[str]:
    """torchrun (as ``python -m torch.distributed.run``, this interpreter) with ``workers`` local processes, each
    one's stdout and stderr in its own file under ``log_dir`` (the agent's own output stays on the pipe)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={workers}",
        "--redirects=3",
        f"--log-dir={log_dir}",
        *args,
    ]


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-TAIL_LINES:])


def rank_outputs(log_dir: Path) -> dict[int, str]:
    """Each local rank's output (stdout, then stderr) from torchrun's log folder
    (``<run>/attempt_<n>/<local rank>/std{out,err}.log``)."""
    out: dict[int, str] = {}
    for folder in sorted(log_dir.glob("*/attempt_*/*")):
        if folder.name.isdigit():
            files = [folder / f"{stream}.log" for stream in ("stdout", "stderr")]
            parts = [f.read_text(errors="replace").strip() for f in files if f.is_file()]
            out[int(folder.name)] = "\n".join(p for p in parts if p)
    return out


def _failure(agent: str, log_dir: Path) -> str:
    """The output of the rank that failed first (torchrun's root cause), else what torchrun itself printed."""
    found = _ROOT_CAUSE.search(agent)
    output = rank_outputs(log_dir).get(int(found["rank"])) if found else None
    if found and output:
        return f"rank {found['rank']} exited with {found['code']} first; its last output:\n{_tail(output)}"
    return f"torchrun's last output:\n{_tail(agent)}"


def run_local(config: Config, args: list[str], workers: int | None = None) -> None:
    """Train with ``workers`` (default ``training.workers``) local processes; returns when all have finished,
    else a PipelineError quoting the failed rank's last output lines. Bounded by ``training.job_timeout_minutes``."""
    n = workers or config.training.workers
    minutes = config.training.job_timeout_minutes
    with tempfile.TemporaryDirectory(prefix="kfloop-torchrun-") as tmp:
        log_dir = Path(tmp)
        # a session of its own: on a timeout the whole tree (torchrun's agent and its workers) is ended
        proc = subprocess.Popen(
            torchrun_command(n, args, log_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            agent, _ = proc.communicate(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            last = "\n".join(
                f"rank {r}: {_tail(text).splitlines()[-1]}" for r, text in rank_outputs(log_dir).items() if text
            )
            raise PipelineError(
                f"training.workers {n}: the local processes did not finish within training.job_timeout_minutes "
                f"({minutes} min); their last lines:\n{last or '(none)'}"
            ) from None
        except BaseException:  # interrupted: leave no worker behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if proc.returncode != 0:
            raise PipelineError(
                f"training.workers {n}: the local training processes failed (torchrun exit code {proc.returncode}); "
                f"{_failure(agent, log_dir)}"
            )


__all__ = [
    "IMAGE_PYTHON",
    "WORKER_MODULE",
    "on_cluster",
    "rank_outputs",
    "run_local",
    "torchrun_command",
    "worker_args",
]
