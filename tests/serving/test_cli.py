"""`kfloop serve` / `kfloop predict` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kfloop.registry import ModelRegistry
from kfloop.serving.client import ServingClient
from kfloop.storage import LocalStorage
from tests.conftest import demo_config, free_port
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
    lots = json.dumps({**rows[0], "amount": "lots"})
    bad_grpc = _kfloop("predict", "-c", str(config), "-p", "grpc", "--grpc-target", server.grpc_target, "-d", lots)
    assert bad_grpc.returncode == 1 and "Traceback" not in bad_grpc.stderr
    assert "input 'amount'[0]: expected a number, got str 'lots'" in bad_grpc.stderr  # the field, as V2 REST names it
    assert "ValueError" not in bad_grpc.stderr


def test_serve_without_a_champion_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "kfloop.json"
    config.write_text(demo_config(tmp_path / "ws").model_dump_json())
    out = _kfloop("serve", "-c", str(config))
    assert out.returncode == 2
    assert "no champion" in out.stderr and "kfloop run" in out.stderr
    pinned = _kfloop("serve", "-c", str(config), "--version", "v9")
    assert pinned.returncode == 1 and "no version 'v9'" in pinned.stderr


def test_serve_check_without_a_champion_suggests_only_what_works(trained: Trained, tmp_path: Path) -> None:
    config = tmp_path / "kfloop.json"
    cfg = demo_config(tmp_path / "ws")
    config.write_text(cfg.model_dump_json())
    for command in ("serve-check", "serve"):  # an empty registry: nothing to pin
        out = _kfloop(command, "-c", str(config))
        assert out.returncode == 2 and "no champion" in out.stderr and "kfloop run" in out.stderr, out.stderr
        assert "--version" not in out.stderr
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.pt").write_bytes(b"not a model")
    ModelRegistry(LocalStorage(tmp_path / "ws"), cfg.training.model_name).register(weights, {"framework": "pytorch"})
    for command in ("serve-check", "serve"):  # a candidate, never promoted: pin it, or promote it
        out = _kfloop(command, "-c", str(config))
        assert out.returncode == 2 and "pass --version v1" in out.stderr and "kfloop models promote" in out.stderr
    pinned = _kfloop("serve-check", "-c", str(config), "--version", "v9")
    assert pinned.returncode == 1 and "no version 'v9' (known: v1)" in pinned.stderr
    # the option it suggests is real: a pinned check serves exactly that version
    served = trained.write_config(tmp_path / "trained.json")
    out = _kfloop("serve-check", "-c", str(served), "--rows", "5", "--version", trained.champion)
    assert out.returncode == 0, out.stderr
    assert f"{trained.config.training.model_name} {trained.champion}" in " ".join(out.stdout.split())


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


def banner(server: Server) -> str:
    assert server.log_path is not None
    return " ".join(server.log_path.read_text(errors="replace").split())


def _reaches(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_serve_listens_on_this_machine_only_unless_host_says_otherwise(
    trained: Trained, start_server, tmp_path: Path
) -> None:
    """127.0.0.2 is this machine too, but not the address 127.0.0.1: a server there is unreachable unless it
    listens on every interface (as the cluster components do: tests/serving/test_components.py)."""
    config = trained.write_config(tmp_path / "kfloop.json")
    local: Server = start_server(config)
    assert _reaches("127.0.0.1", local.http_port) and _reaches("127.0.0.1", local.grpc_port)
    assert not _reaches("127.0.0.2", local.http_port) and not _reaches("127.0.0.2", local.grpc_port)
    local.stop()  # stdout is a file here: the banner is flushed at exit
    assert "listening on 127.0.0.1 (this address only;" in banner(local)
    every: Server = start_server(config, "--host", "0.0.0.0")
    client = ServingClient.for_config(
        trained.config, f"http://127.0.0.2:{every.http_port}", f"127.0.0.2:{every.grpc_port}"
    )
    for protocol in ("v2", "grpc"):  # reached on another address of the machine, over REST and gRPC
        assert client.predict(trained.request_rows(1), protocol)["model_version"] == trained.champion
    client.close()
    every.stop()
    assert "listening on 0.0.0.0 (every interface)" in banner(every)
    nowhere = _kfloop("serve", "-c", str(config), "--host", "10.255.255.1", "--http-port", str(free_port()))
    assert nowhere.returncode == 2 and "--host '10.255.255.1' is not an address of this machine" in nowhere.stderr


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
