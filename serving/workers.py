"""``kfloop serve`` with ``serving.workers`` > 1: this process supervises that many server processes.

Why processes: one Python server is one core (the GIL); on a machine with more, N workers answer about N
times the requests. Each worker is a whole ``kfloop serve`` server (:func:`kfloop.serving.server.serve_local`
with its :class:`~kfloop.serving.worker_slot.WorkerSlot`): it loads the model, follows the champion with its
own watch (every worker switches to the promoted version within ``serving.reload_seconds``), and writes its
own inference-log files. They share the ports and the metrics (see :mod:`kfloop.serving.worker_slot`).

The supervisor loads no model. It checks the ports and the champion first (so a mistake fails in a second,
as with one process), starts the workers (``python -m kfloop.serving.workers``, the config as JSON in the
environment), records the per-minute request samples from every worker's metrics at once (one writer, as
one process would be), and on SIGINT/SIGTERM stops the workers, each writing its last log rows. A worker
that dies after it was ready is started again; one that exits before it was ready ends the server (it
printed why).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kfloop.config import Config, config_from_json, config_to_json
from kfloop.errors import WorkerExitedError
from kfloop.storage import Storage

if TYPE_CHECKING:
    from kfloop.serving.request_samples import RequestSampler

__all__ = ["CONFIG_ENV", "serve_workers"]

log = logging.getLogger("kserve")  # beside the workers' lines
#: The config, as JSON, in a worker's environment (as the cluster components take it).
CONFIG_ENV = "KFLOOP_CONFIG_JSON"
#: prometheus_client's multiprocess directory (both spellings: Feast sets the older one when it is missing).
PROMETHEUS_DIR_ENVS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
POLL_SECONDS = 0.2
#: How long stopping workers get beyond the inference log's shutdown bound before they are killed.
STOP_MARGIN_SECONDS = 15.0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]


class Supervisor:
    """The worker processes of one ``kfloop serve`` and the run directory they share."""

    def __init__(self, config: Config, environ: Mapping[str, str], args: list[str], run_dir: Path) -> None:
        from kfloop.serving.worker_slot import RUN_DIR_ENV, metrics_dir

        self.count = config.serving.workers
        self.args = args
        self.run_dir = run_dir
        metrics_dir(run_dir).mkdir(parents=True)
        self.env = {**environ, CONFIG_ENV: config_to_json(config), RUN_DIR_ENV: str(run_dir)}
        self.env.update(dict.fromkeys(PROMETHEUS_DIR_ENVS, str(metrics_dir(run_dir))))
        self.workers: list[_Worker] = []
        self.stopping = False

    def start(self) -> None:
        self.workers = [self._spawn(i) for i in range(self.count)]

    def _spawn(self, index: int) -> _Worker:
        cmd = [sys.executable, "-m", "kfloop.serving.workers", "--index", str(index), "--count", str(self.count)]
        return _Worker(index, subprocess.Popen([*cmd, *self.args], env=self.env))

    def _ready(self, index: int) -> Path:
        from kfloop.serving.worker_slot import ready_dir

        return ready_dir(self.run_dir) / str(index)

    def check(self) -> None:
        """Start again a worker that died after it was ready; WorkerExitedError for one that never was."""
        from prometheus_client.multiprocess import mark_process_dead

        from kfloop.serving.worker_slot import metrics_dir

        for i, worker in enumerate(self.workers):
            code = worker.proc.poll()
            if code is None or self.stopping:
                continue
            mark_process_dead(worker.proc.pid, str(metrics_dir(self.run_dir)))  # its live gauges leave
            marker = self._ready(worker.index)
            if not marker.exists():
                raise WorkerExitedError(
                    f"serving worker {worker.index} (pid {worker.proc.pid}) exited with code {code} before it was "
                    "ready; its lines above say why"
                )
            marker.unlink()
            log.error("serving worker %d (pid %d) exited with code %d: starting it again", i, worker.proc.pid, code)
            self.workers[i] = self._spawn(worker.index)

    def stop(self, timeout: float) -> None:
        """SIGTERM to every worker (each writes its last inference-log rows), SIGKILL after ``timeout``."""
        self.stopping = True
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("serving worker %d did not stop within %g s: killed", worker.index, timeout)
                worker.proc.kill()
                worker.proc.wait()


def _sample_every_minute(sampler: RequestSampler, done: threading.Event) -> None:
    """``sampler.tick()`` just after each wall-clock minute starts, until ``done`` (as RequestSampler.run)."""
    from kfloop.minute_samples import minute_of
    from kfloop.serving.request_samples import TICK_DELAY_SECONDS

    while True:
        now = datetime.now(UTC)
        wait = (minute_of(now) - now).total_seconds() + 60 + TICK_DELAY_SECONDS
        if done.wait(wait):
            return
        try:
            sampler.tick()
        except Exception:
            log.exception("request samples: tick failed (retried next minute)")


def serve_workers(
    config: Config,
    storage: Storage,
    environ: Mapping[str, str],
    *,
    version: str | None,
    ports: tuple[int, int],
    on_ready: Callable[[str], None] | None,
    host: str,
) -> None:
    """Run ``serving.workers`` server processes on the shared ``ports`` (HTTP, gRPC) until SIGINT/SIGTERM."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from kfloop.serving.ports import check_ports
    from kfloop.serving.request_samples import RequestSampler
    from kfloop.serving.worker_slot import metrics_dir

    http_port, grpc_port = ports
    check_ports(http_port, grpc_port, host)
    from kfloop.registry import ModelRegistry

    served = ModelRegistry(storage, config.training.model_name).servable(version)
    args = ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--host", host]
    args += ["--version", version] if version else []
    run_dir = Path(tempfile.mkdtemp(prefix="kfloop-serve-workers-"))
    supervisor = Supervisor(config, environ, args, run_dir)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sampler = RequestSampler(
        storage, [config.training.model_name], registry=MultiProcessCollector(None, str(metrics_dir(run_dir))), log=log
    )
    ticker = threading.Thread(target=_sample_every_minute, args=(sampler, stop), name="request-samples", daemon=True)
    try:
        supervisor.start()
        ticker.start()
        if on_ready is not None:
            on_ready(f"{served} in {supervisor.count} worker processes")
        while not stop.wait(POLL_SECONDS):
            supervisor.check()
    finally:
        stop.set()
        supervisor.stop(config.serving.inference_log.shutdown_timeout_seconds + STOP_MARGIN_SECONDS)
        sampler.close()  # after the last request was answered: every worker's counts are in the files
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """One worker: ``python -m kfloop.serving.workers --index I --count N --http-port P --grpc-port Q ...``."""
    from kfloop.serving._kserve import import_kserve

    import_kserve()  # before any kserve import: KServe parses sys.argv at its first import
    parser = argparse.ArgumentParser(prog="python -m kfloop.serving.workers")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--version", default=None)
    args = parser.parse_args(argv)
    from kfloop.serving.server import serve_local
    from kfloop.serving.worker_slot import RUN_DIR_ENV, WorkerSlot
    from kfloop.storage import open_storage, resolve_credentials

    config = config_from_json(os.environ[CONFIG_ENV])
    creds = resolve_credentials(config.storage, os.environ) if config.storage.type == "s3" else None
    slot = WorkerSlot(args.index, args.count, Path(os.environ[RUN_DIR_ENV]))
    serve_local(
        config,
        open_storage(config.storage, creds),
        os.environ,
        version=args.version,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        host=args.host,
        worker=slot,
    )


if __name__ == "__main__":
    main()
