"""Close the loop on one machine: start `kfloop serve` on the champion, score real rows over V1, V2 and
gRPC, stop it cleanly, and report what an application would see (and what the inference log got).
``make run`` ends with this, so the demo shows the served model, not just the trained one."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from kfloop.config import Config
from kfloop.errors import KfloopError
from kfloop.serving.client import ServingClient
from kfloop.storage import Storage

PROTOCOLS = ("v1", "v2", "grpc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_rows(config: Config, storage: Storage) -> int:
    if not config.serving.inference_log.enabled:
        return 0
    from kfloop.serving.inference_log import read_inference_log

    return read_inference_log(storage, config).num_rows


def serve_check(
    config: Config,
    config_path: Path,
    storage: Storage,
    rows: list[dict[str, Any]],
    environ: Mapping[str, str],
    *,
    requests: int = 50,
    timeout: float = 120.0,
    version: str | None = None,
) -> dict[str, Any]:
    """Serve (the champion, or ``version`` pinned), send ``requests`` single-row requests per protocol plus
    one batch, stop; the findings."""
    http, grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "kfloop", "serve", "-c", str(config_path), "--http-port", str(http)]
    cmd += ["--grpc-port", str(grpc_port), *(["--version", version] if version else [])]
    logged_before = _log_rows(config, storage)
    server_log = tempfile.NamedTemporaryFile(prefix="kfloop-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=dict(environ), stdout=server_log, stderr=subprocess.STDOUT)
    try:
        client = ServingClient.for_config(config, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}")
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                out = Path(server_log.name).read_text(errors="replace")
                raise KfloopError(f"kfloop serve exited with {proc.returncode}: {out.strip()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{client.http_base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() - started > timeout:
                raise KfloopError(f"kfloop serve was not ready after {timeout:.0f} s")
            time.sleep(0.2)
        startup = time.monotonic() - started
        latency: dict[str, list[float]] = {}
        version = ""
        for protocol in PROTOCOLS:
            latency[protocol] = []
            for i in range(requests):
                t = time.perf_counter()
                result = client.predict([rows[i % len(rows)]], protocol)
                latency[protocol].append((time.perf_counter() - t) * 1000)
                version = result["model_version"]
        batch = client.predict(rows, "v2")["predictions"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        server_log.close()
        Path(server_log.name).unlink(missing_ok=True)
    sent = len(PROTOCOLS) * requests + len(rows)
    return {
        "model": config.training.model_name,
        "version": version,
        "startup_s": round(startup, 1),
        "latency_ms": {p: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for p, v in latency.items()},
        "batch_rows": len(batch),
        # 0/1 labels only: a regressor has none, a multiclass label is a class name (nothing is "flagged")
        "flagged": sum(p["label"] for p in batch if isinstance(p.get("label"), int)),
        "defaulted": sum(p["defaulted"] for p in batch),
        "sent_rows": sent,
        "logged_rows": _log_rows(config, storage) - logged_before,
        "clean_exit": proc.returncode in (0, -signal.SIGTERM),
    }
