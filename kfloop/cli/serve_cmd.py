"""``kfloop serve`` (the local KServe server on the champion) and ``kfloop predict`` (a request to it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace
from kfloop.errors import PredictError


@handle_errors
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str, typer.Option("--version", help="Serve this version (pinned); default: the champion.")] = "",
    http_port: Annotated[int, typer.Option("--http-port", help="Default: serving.http_port.")] = 0,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="Default: serving.grpc_port.")] = 0,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on: this machine only by default; 0.0.0.0 for every interface."),
    ] = "127.0.0.1",
) -> None:
    """Serve the model with Feast online features over KServe V1/V2 REST and gRPC, until Ctrl-C.

    Without --version it follows the registry's champion: a promotion switches the model in place,
    without dropping requests. It listens on 127.0.0.1 unless --host says otherwise (the cluster's
    components, `python -m kfloop.serving`, listen on every interface)."""
    cfg = load(config)
    storage = workspace(cfg)
    from kfloop.registry import ModelRegistry
    from kfloop.serving.ports import check_ports

    name = cfg.training.model_name
    http = http_port or cfg.serving.http_port
    grpc = grpc_port or cfg.serving.grpc_port
    # fail fast, in one line and before the serving stack is imported: a taken port, no version to serve
    check_ports(http, grpc, host)
    ModelRegistry(storage, name).servable(version or None)
    from kfloop.serving.server import PREDICTOR_SUFFIX, serve_local

    every = host in ("0.0.0.0", "::")
    shown = "127.0.0.1" if every else (f"[{host}]" if ":" in host else host)

    def announce(loaded: str) -> None:
        base = f"http://{shown}:{http}"
        pinned = "pinned" if version else "follows the champion"
        console.print(f"serving [bold]{name}[/] {loaded} ({pinned})", highlight=False)
        where = "every interface" if every else "this address only; --host 0.0.0.0 for every interface"
        console.print(f"  listening on {host} ({where})", highlight=False, soft_wrap=True)
        console.print(f"  V1 REST  {base}/v1/models/{name}:predict", highlight=False)
        console.print(f"  V2 REST  {base}/v2/models/{name}/infer", highlight=False)
        console.print(f"  gRPC     {shown}:{grpc} (inference.GRPCInferenceService/ModelInfer)", highlight=False)
        console.print(f"  model only {base}/v2/models/{name}{PREDICTOR_SUFFIX}/infer", highlight=False)
        console.print(f"  health   {base}/v2/health/ready   metrics {base}/metrics", highlight=False)

    serve_local(
        cfg, storage, os.environ, version=version or None, http_port=http, grpc_port=grpc, on_ready=announce, host=host
    )


def _rows(data: str, file: Path | None) -> list[dict[str, Any]]:
    text = file.read_text() if file else (data or sys.stdin.read())
    text = text.strip()
    try:
        try:  # one JSON document (an object or an array of objects), over as many lines as it likes
            whole = json.loads(text)
            rows = whole if isinstance(whole, list) else [whole]
        except json.JSONDecodeError:  # else JSON Lines: one object per line
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as err:
        raise PredictError(f"{file or 'input'}: not JSON rows ({err})") from err
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise PredictError(f"{file or 'input'}: expected JSON objects (one per row)")
    return rows


@handle_errors
def predict(
    config: ConfigOption = DEFAULT_CONFIG,
    data: Annotated[str, typer.Option("--data", "-d", help="A JSON row, a JSON list of rows, or JSON lines.")] = "",
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Rows from a file (JSON list or lines).")] = None,
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="v1 | v2 | grpc")] = "v2",
    url: Annotated[str, typer.Option("--url", help="REST base URL; default: http://127.0.0.1:<http_port>.")] = "",
    grpc_target: Annotated[
        str, typer.Option("--grpc-target", help="gRPC host:port (default: grpc_port on 127.0.0.1).")
    ] = "",
) -> None:
    """Score rows (entity keys + request fields) on a running `kfloop serve`; prints the response JSON."""
    cfg = load(config)
    rows = _rows(data, file)
    from kfloop.serving.client import ServingClient

    if protocol not in ("v1", "v2", "grpc"):
        raise typer.BadParameter(f"--protocol must be v1, v2 or grpc, not {protocol!r}")
    client = ServingClient.for_config(cfg, url or None, grpc_target or None)
    try:
        result = client.predict(rows, protocol)
    except (OSError, RuntimeError) as err:
        raise PredictError(f"{client.describe(protocol)}: {err}") from err
    console.print_json(json.dumps(result))


@handle_errors
def serve_check(
    config: ConfigOption = DEFAULT_CONFIG,
    rows: Annotated[int, typer.Option("--rows", help="Test-split rows to score as one batch.")] = 200,
    version: Annotated[
        str, typer.Option("--version", help="Check this version (as `kfloop serve --version`); default: the champion.")
    ] = "",
) -> None:
    """Start `kfloop serve` on the champion (or --version), score test-split rows over V1, V2 and gRPC, stop it
    cleanly, and print what an application sees (latency, flagged rows, inference-log rows)."""
    cfg = load(config)
    storage = workspace(cfg)
    from kfloop.registry import ModelRegistry

    # fail before a server starts (and before the serving stack is imported), with what works
    ModelRegistry(storage, cfg.training.model_name).servable(version or None)
    from kfloop.cli.summary import serving_table
    from kfloop.serving.check import serve_check as check
    from kfloop.serving.replay import request_rows
    from kfloop.training.sets import latest_training_set, load_split

    test = load_split(storage, latest_training_set(cfg, storage), "test")
    result = check(cfg, config, storage, request_rows(cfg, test.head(rows)), os.environ, version=version or None)
    console.print(serving_table(result))
