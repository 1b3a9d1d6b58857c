"""The servers of the serving benchmark, each a real process on free localhost ports: ours (``kfloop
serve``, one worker or several), MLServer (in its own venv), Feast's feature server (``feast serve``), the
KServe echo model and the bare uvicorn app.

Every process gets its own session (process group) and a log file; :meth:`ServerProcess.stop` ends
that group, so an MLServer inference worker never outlives its server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks import ROOT
from kfloop.config import Config

#: MLServer pins its own fastapi/pydantic/protobuf ranges, so it lives in a venv of its own.
MLSERVER_VENV = ROOT / ".bench" / "mlserver-venv"
#: Pinned: the peer's version is part of the result. torch is the CPU wheel (never an unpinned torch:
#: that pulls a multi-GB CUDA build); httptools gives its uvicorn the same HTTP parser ours runs on.
MLSERVER_PACKAGES = ("mlserver==1.7.1", "torch==2.13.0", "httptools")
RUNTIME_MODULE = "serving_mlserver_runtime"  # benchmarks/serving_mlserver_runtime.py, put on its PYTHONPATH


@dataclass
class ServerProcess:
    """One server: started by :meth:`start`, ready once ``ready_url`` answers 200."""

    name: str
    cmd: list[str]
    ready_url: str
    log: Path
    env: Mapping[str, str] | None = None
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 120.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not _answers(self.ready_url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                state = f"exited with code {code}" if code is not None else f"not ready after {timeout:g} s"
                raise RuntimeError(f"{self.name} {state}; log {self.log}:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _group_stats(self) -> list[list[str]]:
        """``/proc/<pid>/stat`` fields (after the command name) of every process in the server's group."""
        if not self.alive():
            return []
        assert self.proc is not None
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 21 and fields[2] == str(self.proc.pid):  # field 5 of stat: process group id
                out.append(fields)
        return out

    def rss(self) -> int | None:
        """Resident memory (bytes) of the server's whole process group, None when unreadable."""
        total = sum(int(f[21]) for f in self._group_stats()) * os.sysconf("SC_PAGE_SIZE")  # field 24: pages
        return total or None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far of the server's process group (exited children not counted)."""
        stats = self._group_stats()
        ticks = sum(int(f[11]) + int(f[12]) for f in stats)  # fields 14, 15: utime, stime
        return ticks / os.sysconf("SC_CLK_TCK") if stats else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ours(config_path: Path, http_port: int, grpc_port: int, log: Path) -> ServerProcess:
    """``kfloop serve``: the transformer (Feast lookup) and the predictor in one process."""
    cmd = [sys.executable, "-m", "kfloop", "serve", "-c", str(config_path)]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    ready = f"http://127.0.0.1:{http_port}/v2/health/ready"
    return ServerProcess("kfloop serve", cmd, ready, log, cwd=config_path.parent)


def config_with_workers(config_path: Path, workers: int) -> Path:
    """The same config with ``serving.workers: workers``, beside it."""
    data = yaml.safe_load(config_path.read_text())
    data.setdefault("serving", {})["workers"] = workers
    out = config_path.with_name(f"kfloop-w{workers}.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def feast_repo(config: Config, workspace: Path, repo: Path) -> Path:
    """A Feast feature repo (``feature_store.yaml`` only: the registry holds the definitions) on the
    workspace's registry and online store, as ``kfloop features repo`` renders it with absolute paths."""
    from kfloop.feature_repo.store import store_settings
    from kfloop.storage import LocalStorage

    repo.mkdir(parents=True, exist_ok=True)
    settings = store_settings(config, LocalStorage(workspace))
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return repo


def feast_server(repo: Path, port: int, log: Path) -> ServerProcess:
    """``feast serve`` (its HTTP feature server: gunicorn, one uvicorn worker) on ``repo``. Gunicorn's worker
    restart every 1,000 requests (``--max-requests``, a memory-leak guard) is off: the peer at its best."""
    feast = Path(sys.executable).with_name("feast")
    cmd = [str(feast), "serve", "--port", str(port), "--no-access-log", "--workers", "1", "--max-requests", "0"]
    return ServerProcess("feast serve", cmd, f"http://127.0.0.1:{port}/health", log, cwd=repo)


def echo(http_port: int, grpc_port: int, log: Path) -> ServerProcess:
    cmd = [sys.executable, "-m", "benchmarks.serving_echo", "--http_port", str(http_port)]
    cmd += ["--grpc_port", str(grpc_port)]
    return ServerProcess("kserve echo", cmd, f"http://127.0.0.1:{http_port}/v2/health/ready", log)


def floor(port: int, log: Path) -> ServerProcess:
    cmd = [sys.executable, "-m", "benchmarks.serving_floor", str(port)]
    return ServerProcess("uvicorn hello", cmd, f"http://127.0.0.1:{port}/", log)


def ensure_mlserver_venv(venv: Path = MLSERVER_VENV, echo: bool = True) -> Path:
    """Create the MLServer venv on first use (a few minutes, once); return its ``mlserver`` executable."""
    exe = venv / "bin" / "mlserver"
    stamp = venv / ".installed"
    if exe.is_file() and stamp.is_file() and stamp.read_text() == " ".join(MLSERVER_PACKAGES):
        return exe
    if echo:
        print(f"  creating the MLServer venv {venv} (once): {' '.join(MLSERVER_PACKAGES)}", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    ignore = venv.parent / ".gitignore"  # .bench/ holds only generated tooling
    if not ignore.exists():
        ignore.write_text("# benchmark tooling (the MLServer venv): never committed\n*\n")
    python = "python3.11" if sys.version_info[:2] == (3, 11) else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *MLSERVER_PACKAGES], check=True)
    stamp.write_text(" ".join(MLSERVER_PACKAGES))
    return exe


def mlserver(
    exe: Path, model_name: str, version: str, model_dir: Path, workdir: Path, ports: tuple[int, int, int], log: Path
) -> ServerProcess:
    """MLServer serving ``model_dir`` with the custom runtime; ``ports`` = (http, grpc, metrics).

    One process (``parallel_workers: 0``), like ours. MLServer's default, one extra inference worker
    process, does not start with this install (the worker dies on uvloop's "no current event loop"),
    and on 2 cores shared with the load generator it would only add a hop."""
    http_port, grpc_port, metrics_port = ports
    models = workdir / "models" / model_name
    models.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    model = {
        "name": model_name,
        "implementation": f"{RUNTIME_MODULE}.FraudModel",
        "parameters": {"uri": str(model_dir), "version": version},
    }
    (models / "model-settings.json").write_text(json.dumps(model, indent=2))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    ready = f"http://127.0.0.1:{http_port}/v2/models/{model_name}/ready"
    return ServerProcess("mlserver", [str(exe), "start", str(workdir)], ready, log, env=env, cwd=workdir)
