"""What every pipeline step does first: parse the config parameter and open the workspace.

This runs inside a step's container, which is an entrypoint: reading the environment (S3 keys and
other secrets mounted from Kubernetes Secrets) is allowed here and nowhere below.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

from kfloop.config import Config, config_from_json
from kfloop.storage import Storage, open_storage, resolve_credentials


def open_step(config_json: str) -> tuple[Config, Storage]:
    """The config passed as the ``config_json`` pipeline parameter, and its workspace storage."""
    config = config_from_json(config_json)
    creds = None if config.storage.type == "local" else resolve_credentials(config.storage, os.environ)
    return config, open_storage(config.storage, creds)


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus randomness. Every stage names what it writes by it."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
