"""One typed config: ``kfloop.yaml`` → :class:`Config`, loaded once at the entrypoint and passed down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from kfloop.config._base import Section
from kfloop.config.cluster import ClusterConfig, Resources
from kfloop.config.contract import ContractConfig
from kfloop.config.sections import (
    FeaturesConfig,
    MonitoringConfig,
    ServingConfig,
    TrainingConfig,
)
from kfloop.config.source import ColumnType, SourceConfig, SourceFormat
from kfloop.config.storage import LocalStorageConfig, S3StorageConfig, SecretRef, StorageConfig
from kfloop.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "ColumnType",
    "Config",
    "ContractConfig",
    "FeaturesConfig",
    "LocalStorageConfig",
    "MonitoringConfig",
    "Resources",
    "S3StorageConfig",
    "SecretRef",
    "ServingConfig",
    "SourceConfig",
    "SourceFormat",
    "TrainingConfig",
    "config_from_json",
    "config_schema",
    "config_to_json",
    "load_config",
    "parse_config",
]


class Config(Section):
    """The whole of ``kfloop.yaml``."""

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="Project name (a DNS label).")
    storage: StorageConfig = LocalStorageConfig()
    source: SourceConfig
    contract: ContractConfig = ContractConfig()
    features: FeaturesConfig = FeaturesConfig()
    training: TrainingConfig = TrainingConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _contract_names_known_columns(self) -> Config:
        known = self.source.columns
        named = {f"contract.columns.{c}": c for c in self.contract.columns}
        if self.contract.duplicates:
            named |= {f"contract.duplicates.keys ({c})": c for c in self.contract.duplicates.keys}
        named |= {f"contract.completeness.columns ({c})": c for c in self.contract.completeness.columns or ()}
        unknown = [path for path, col in named.items() if col not in known]
        if unknown:
            raise ValueError("not a column declared in source.columns: " + ", ".join(unknown))
        misfits = []
        for col, rule in self.contract.columns.items():
            typ = known[col]
            numeric = typ in (ColumnType.INT64, ColumnType.FLOAT64)
            for key in ("min", "max"):
                if getattr(rule, key) is not None and not numeric:
                    misfits.append(f"contract.columns.{col}.{key} needs a numeric column ({col} is {typ.value})")
            for key in ("allowed", "regex", "max_length"):
                if getattr(rule, key) is not None and typ is not ColumnType.STRING:
                    misfits.append(f"contract.columns.{col}.{key} needs a string column ({col} is {typ.value})")
        if misfits:
            raise ValueError("; ".join(misfits))
        return self


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the config schema)"
        lines.append(f"{origin}: {path}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, origin: str = "<config>") -> Config:
    """Validate an already-parsed mapping; errors name ``origin`` and each key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping, got {type(data).__name__}")
    # JSON mode: strict fields still reject "5" for an int, but accept enum values and ISO dates.
    try:
        return Config.model_validate_json(json.dumps(data, default=str))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    return parse_config(data, str(p))


def config_to_json(config: Config) -> str:
    """JSON form (field and column order kept), used to hand the config to pipeline steps as one parameter."""
    return json.dumps(config.model_dump(mode="json"))


def config_from_json(text: str) -> Config:
    """Inverse of :func:`config_to_json` (JSON mode lets strict fields accept their JSON forms)."""
    try:
        return Config.model_validate_json(text)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, "<pipeline config parameter>")) from None


def config_schema() -> dict[str, Any]:
    """JSON Schema of ``kfloop.yaml`` (for editors and ``kfloop config schema``)."""
    return Config.model_json_schema()
