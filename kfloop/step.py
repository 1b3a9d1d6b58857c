"""What every pipeline step does first: parse the config parameter and open the workspace.

This runs inside a step's container, which is an entrypoint: reading the environment (S3 keys and
other secrets mounted from Kubernetes Secrets) is allowed here and nowhere below.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

from kfloop.config import Config, config_from_json
from kfloop.errors import ConfigError
from kfloop.storage import Storage, open_storage, resolve_credentials


def open_step(config_json: str, table: str = "") -> tuple[Config, Storage]:
    """The config passed as the ``config_json`` pipeline parameter (as attribute table ``table`` sees it, when
    given: see :func:`for_table`), and its workspace storage."""
    config = for_table(config_from_json(config_json), table)
    creds = None if config.storage.type == "local" else resolve_credentials(config.storage, os.environ)
    return config, open_storage(config.storage, creds)


def for_table(config: Config, table: str) -> Config:
    """``config`` as attribute table ``table`` sees it (its source and contract: what ingest and validate run on);
    ``""`` is the main source. An unknown name is a ConfigError naming the known tables."""
    if not table:
        return config
    try:
        return config.table_config(table)
    except KeyError as err:
        known = ", ".join(t.name for t in config.features.tables)
        have = f"known tables: {known}" if known else "the config declares no features.tables"
        raise ConfigError(f"no attribute table {table!r} in features.tables ({have})") from err


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus randomness. Every stage names what it writes by it."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
