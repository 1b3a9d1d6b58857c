"""Shared CLI plumbing: config option, the one place that turns errors into a one-line exit."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kfloop.config import Config, load_config
from kfloop.config.storage import s3_endpoint
from kfloop.errors import KfloopError
from kfloop.storage import S3Credentials, Storage, open_storage, resolve_credentials

console = Console()
err_console = Console(stderr=True)

DEFAULT_CONFIG = "kfloop.yaml"
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="KFLOOP_CONFIG", help="Path to kfloop.yaml.", show_default=True),
]

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Global flags set by the app callback."""

    debug: bool = False


def handle_errors(func: F) -> F:
    """Known errors → one line on stderr and their exit code (kfloop.errors' mapping); with ``--debug`` the
    traceback instead, chained causes included, and the same exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.exceptions.TyperException):
            raise  # usage errors: click prints them and exits 2
        except KfloopError as err:
            if State.debug:
                traceback.print_exception(err, file=sys.stderr)
            else:
                err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as err:
            if State.debug:
                raise
            err_console.print(
                f"[bold red]error:[/] {type(err).__name__}: {escape(str(err))} (rerun with --debug for details)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def load(config_path: Path) -> Config:
    """Load the config, pointing at the demo config when the default file is absent."""
    if str(config_path) == DEFAULT_CONFIG and not config_path.exists():
        from kfloop.errors import ConfigError

        raise ConfigError(f"{config_path}: not found; pass --config (the demo: examples/fraud/kfloop.yaml)")
    return load_config(config_path)


def credentials(config: Config) -> S3Credentials | None:
    """Resolve S3 secrets from the environment (this is the entrypoint, the only place that reads it)."""
    if config.storage.type == "local":
        return None
    return resolve_credentials(config.storage, os.environ)


def workspace(config: Config) -> Storage:
    """The config's workspace; for S3 also tells Feast's S3 registry the endpoint (entrypoint-only env)."""
    endpoint = s3_endpoint(config.storage)
    if endpoint:
        os.environ.setdefault("FEAST_S3_ENDPOINT_URL", endpoint)
    return open_storage(config.storage, credentials(config))


def is_tty() -> bool:
    return sys.stderr.isatty()


def spinner() -> Progress:
    """A spinner with elapsed time for long work; transient, so summaries stay clean."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )


def require_role(cfg: Config, action: str) -> None:
    """With ``governance.roles`` set, refuse (and audit) ``action`` for a caller whose roles do not allow it, before
    anything changes; without roles, nothing (and the workspace is not opened for it)."""
    if not cfg.governance.roles.enabled:
        return
    from kfloop.roles import authorize
    from kfloop.storage import open_storage

    authorize(cfg, open_storage(cfg.storage, credentials(cfg)), action)
