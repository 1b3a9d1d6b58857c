"""Close the loop on one machine: start `kfloop serve` on the champion, score real rows over V1, V2 and
gRPC, stop it cleanly, and report what an application would see (and what the inference log got).
``make run`` ends with this, so the demo shows the served model, not just the trained one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kfloop.config import Config
from kfloop.serving.local_server import running_server
from kfloop.serving.replay import logged_rows
from kfloop.storage import Storage

PROTOCOLS = ("v1", "v2", "grpc")


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
    logged_before = logged_rows(config, storage)
    with running_server(config, config_path, environ, version=version, timeout=timeout) as server:
        client = server.client
        client.connect()  # an application's connections are open before its first request
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
    sent = len(PROTOCOLS) * requests + len(rows)
    return {
        "model": config.training.model_name,
        "version": version,
        "startup_s": round(server.startup_s, 1),
        "latency_ms": {p: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for p, v in latency.items()},
        "batch_rows": len(batch),
        # 0/1 labels only: a regressor has none, a multiclass label is a class name (nothing is "flagged")
        "flagged": sum(p["label"] for p in batch if isinstance(p.get("label"), int)),
        "defaulted": sum(p["defaulted"] for p in batch),
        "sent_rows": sent,
        "logged_rows": logged_rows(config, storage) - logged_before,
        "clean_exit": server.clean_exit,
    }
