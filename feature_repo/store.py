"""The Feast store for a kfloop config: SQLite + local Parquet embedded, Redis + S3 on a cluster.

``repo_config`` is the single place that turns ``kfloop.yaml`` into Feast's ``RepoConfig``; the
shipped ``feature_store.yaml`` files are rendered from it (``kfloop features repo``) and a test keeps
them in sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from feast import FeatureStore
from feast.repo_config import RepoConfig

from kfloop.config import Config
from kfloop.config.storage import s3_endpoint
from kfloop.errors import ConfigError
from kfloop.feature_repo.asof_store import OFFLINE_STORE_TYPE
from kfloop.feature_repo.definitions import FeastObjects, build_objects, view_keys
from kfloop.layout import FEAST_DIR, FEAST_REGISTRY_FILE, FEAST_SQLITE_FILE, feast_project, offline_key
from kfloop.storage import Storage


def _expand(value: str, environ: Mapping[str, str]) -> str:
    """``${VAR}`` placeholders, resolved at the entrypoint's environment (secrets never sit in config)."""
    out = value
    while "${" in out:
        start = out.index("${")
        end = out.index("}", start)
        name = out[start + 2 : end]
        if name not in environ:
            raise ConfigError(f"features.online_store: environment variable {name} is not set")
        out = out[:start] + environ[name] + out[end + 1 :]
    return out


def store_settings(config: Config, storage: Storage, environ: Mapping[str, str] | None = None) -> dict:
    """Feast repo settings for this workspace (see :func:`repo_settings`)."""
    return repo_settings(config, storage.uri(FEAST_DIR), environ)


def repo_settings(config: Config, root: str, environ: Mapping[str, str] | None = None) -> dict:
    """Feast repo settings as a plain mapping (what feature_store.yaml holds), with Feast's files under
    ``root``. With ``environ`` None, ``${VAR}`` placeholders stay for Feast to expand when it reads YAML."""
    feats = config.features
    registry = feats.registry or f"{root}/{FEAST_REGISTRY_FILE}"
    if feats.online_store.type == "sqlite":
        online: dict = {"type": "sqlite", "path": f"{root}/{FEAST_SQLITE_FILE}"}
    else:
        conn = feats.online_store.connection_string
        online = {
            "type": "redis",
            "connection_string": _expand(conn, environ) if environ is not None else conn,
            # kfloop writes only rows newer than its watermark, newest per entity, one writer at a time: the
            # per-row timestamp read is pure overhead, and it would keep a rebuilt view's new values out
            "skip_dedup": True,
        }
    return {
        "project": feast_project(config),
        "provider": "local",
        "registry": {"registry_type": "file", "path": registry, "cache_ttl_seconds": 60},
        "online_store": online,
        # Feast's DuckDB store with an as-of join: training sets in n log n, whatever the TTL (asof_store.py)
        "offline_store": {"type": OFFLINE_STORE_TYPE},
        "entity_key_serialization_version": 3,
    }


def objects_for(config: Config, storage: Storage) -> FeastObjects:
    """The Feast objects with their offline sources in this workspace (views and attribute tables)."""
    uris = {name: storage.uri(offline_key(name)) for name in view_keys(config)}
    return build_objects(config, uris, s3_endpoint(config.storage))


def open_store(config: Config, storage: Storage, environ: Mapping[str, str]) -> FeatureStore:
    """A FeatureStore on this workspace (local paths are created; remote ones must be reachable)."""
    settings = store_settings(config, storage, environ)
    local = storage.local_path(FEAST_DIR)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
    repo = Path(local) if local is not None else Path.cwd()
    return FeatureStore(config=RepoConfig(repo_path=repo, **settings))
