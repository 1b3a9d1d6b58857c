"""`kfloop serve` / `kfloop predict` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import demo_config
from tests.serving.conftest import ROOT, Server, Trained

pytestmark = pytest.mark.slow


def _kfloop(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kfloop", *args]
    return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=120)


def test_predict_prints_the_servers_answer_over_each_protocol(trained: Trained, start_server, tmp_path: Path) -> None:
    config = trained.write_config(tmp_path / "kfloop.json")
    server: Server = start_server(config)
    rows = trained.request_rows(2)
    rows[1]["distance_from_home_km"] = None  # nullable in the contract: null over every protocol
    for protocol in ("v1", "v2", "grpc"):
        out = _kfloop(
            "predict",
            "-c",
            str(config),
            "-p",
            protocol,
            "--url",
            server.url,
            "--grpc-target",
            server.grpc_target,
            stdin="\n".join(json.dumps(r) for r in rows),
        )
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert body["model_version"] == trained.champion and len(body["predictions"]) == 2

    bad = _kfloop("predict", "-c", str(config), "--url", server.url, "-d", json.dumps({**rows[0], "amount": "lots"}))
    assert bad.returncode == 1
    assert "400" in bad.stderr and "amount" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_without_a_champion_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "kfloop.json"
    config.write_text(demo_config(tmp_path / "ws").model_dump_json())
    out = _kfloop("serve", "-c", str(config))
    assert out.returncode == 2
    assert "no champion" in out.stderr and "kfloop run" in out.stderr
    pinned = _kfloop("serve", "-c", str(config), "--version", "v9")
    assert pinned.returncode == 1 and "no version 'v9'" in pinned.stderr


def test_serve_check_scores_over_every_protocol_and_logs_every_row(trained: Trained, tmp_path: Path) -> None:
    config = trained.write_config(tmp_path / "kfloop.json")
    out = _kfloop("serve-check", "-c", str(config), "--rows", "30")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert f"{trained.config.training.model_name} {trained.champion}" in text
    for protocol in ("v1", "v2", "grpc"):
        assert f"{protocol} latency" in text
    assert "batch │ 30 test rows" in text
    assert "180 of 180 rows written" in text and "clean" in text


def test_serve_on_a_taken_port_fails_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kfloop.json"
    config.write_text(demo_config(tmp_path / "ws").model_dump_json())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _kfloop("serve", "-c", str(config), "--http-port", str(port))
    assert out.returncode == 1
    assert f"port {port} is not available" in out.stderr and "Traceback" not in out.stderr


def test_metrics_stay_in_process_values_even_after_feast_is_imported(tmp_path: Path) -> None:
    """Feast's import sets PROMETHEUS_MULTIPROC_DIR; kfloop imports prometheus_client first, so serving's
    metrics are plain in-process values (not mmap files, slower on every request)."""
    code = "import kfloop, feast, kfloop.serving.metrics, prometheus_client.values as v; print(v.ValueClass.__name__)"
    inherited = {
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/feast_metrics_x1",
        "PROMETHEUS_MULTIPROCESS_DIR": "/tmp/feast_metrics_x1",
    }
    for env, expected in ((inherited, "MutexValue"), ({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, "MmapedValue")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}, **env},
        )
        assert out.stdout.strip() == expected, env  # a directory the user configured is respected
