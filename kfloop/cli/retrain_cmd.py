"""``kfloop monitor retrain`` and ``kfloop monitor webhook``: the two ways a drift verdict asks for a retrain
besides ``kfloop monitor check --retrain`` (which calls :func:`decide_and_print`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, require_role, workspace
from kfloop.config import Config
from kfloop.storage import Storage

_stderr = Console(stderr=True)


def decide_and_print(config: Config, storage: Storage, record: dict, config_path: Path, quiet: bool = False) -> dict:
    """Decide on a stored verdict (starting the run ``monitoring.retrain.run_on`` names) and say what was
    decided; on stderr when stdout carries JSON (``quiet``)."""
    from kfloop.monitoring.launch import launcher_for
    from kfloop.monitoring.retrain import decide

    audit = decide(config, storage, record, launcher_for(config, Path(config_path)))
    colour = {"retrain": "green", "no": "yellow"}.get(audit["decision"], "red")
    (_stderr if quiet else console).print(
        f"retrain: [bold {colour}]{audit['decision']}[/] — {escape(audit['reason'])} (audit {audit['audit_id']})"
    )
    return audit


@handle_errors
def retrain(
    config: ConfigOption = DEFAULT_CONFIG,
    check_id: str = typer.Option("", "--check", help="The stored check to decide on; default: the newest."),
) -> None:
    """Decide on retraining from a stored drift check, under the same guards as `monitor check --retrain`
    (drift only, one run per episode, cooldown); every decision is audited under audit/retrain/."""
    from kfloop.monitoring.monitor import read_check

    cfg = load(config)
    require_role(cfg, "run")
    storage = workspace(cfg)
    try:
        record = read_check(storage, cfg.training.model_name, check_id or None)
    except FileNotFoundError:
        raise typer.BadParameter(f"no stored check {check_id or '(latest)'}", param_hint="--check") from None
    decide_and_print(cfg, storage, record, config)


@handle_errors
def webhook(
    config: ConfigOption = DEFAULT_CONFIG,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a pod)."),
    port: int = typer.Option(9095, help="Port to listen on."),
) -> None:
    """Receive Alertmanager webhooks (payload v4) and decide on retraining for each firing alert; a
    re-delivered alert (same groupKey, fingerprint, startsAt) starts nothing."""
    from kfloop.monitoring.launch import launcher_for
    from kfloop.monitoring.webhook import make_server

    cfg = load(config)
    server = make_server(cfg, workspace(cfg), launcher_for(cfg, Path(config)), host, port)
    console.print(f"retrain webhook on http://{host}:{server.server_address[1]}/alerts (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
