"""``kfloop inference-service``: the KServe InferenceService YAML of the champion (or of a given version).

The same object the pipeline's deploy step creates, for review, GitOps, or ``kubectl replace -f -`` (which
also ends a canary: the rendered predictor has no ``canaryTrafficPercent`` unless ``--canary`` is given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, err_console, handle_errors, load, workspace


@handle_errors
def inference_service(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str, typer.Option(help="Registry version to serve; default: the champion.")] = "",
    canary: Annotated[
        bool, typer.Option("--canary", help="Give the version serving.canary_traffic_percent of the traffic.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the YAML to this file (atomically), not stdout.")
    ] = None,
) -> None:
    """Print the InferenceService (transformer + predictor) that serves a registry version."""
    from kfloop.errors import ConfigError, ModelNotFoundError
    from kfloop.files import atomic_write
    from kfloop.registry import ModelRegistry
    from kfloop.serving.inference_service import build_inference_service, render_yaml, storage_uri_for

    cfg = load(config)
    if canary and cfg.serving.canary_traffic_percent is None:
        raise ConfigError(f"{config}: --canary needs serving.canary_traffic_percent in the config")
    storage = workspace(cfg)
    registry = ModelRegistry(storage, cfg.training.model_name)
    mv = registry.get(version) if version else registry.champion()
    if mv is None:
        raise ModelNotFoundError(f"model {cfg.training.model_name!r} has no champion yet: train one, or pass --version")
    uri = storage_uri_for(storage, cfg, mv.version)
    text = render_yaml(build_inference_service(cfg, mv.version, uri, canary=canary))
    if cfg.storage.type == "local":
        err_console.print(
            escape(f"note: the workspace is local, so the model URI is {uri}, which a cluster cannot download"),
            highlight=False,
            soft_wrap=True,
        )
    if output is None:
        typer.echo(text, nl=False)
        return
    atomic_write(output, lambda fh: fh.write(text.encode()))
    err_console.print(escape(f"wrote {output} ({cfg.training.model_name} {mv.version})"), highlight=False)
