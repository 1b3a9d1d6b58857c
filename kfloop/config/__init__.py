"""One typed config: ``kfloop.yaml`` → :class:`Config`, loaded once at the entrypoint and passed down."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from kfloop.config._base import Section
from kfloop.config.alerts import AlertRules, AlertsConfig, Webhook
from kfloop.config.availability import check_inputs_known
from kfloop.config.cluster import ClusterConfig, KfpAuth, Resources
from kfloop.config.contract import ContractConfig, parse_duration
from kfloop.config.features import Aggregate, FeaturesConfig, FeatureViewSpec
from kfloop.config.governance import GovernanceConfig
from kfloop.config.report import ReportConfig
from kfloop.config.schedules import SchedulesConfig
from kfloop.config.sections import (
    DriftTest,
    MonitoringConfig,
    MonitoringWindow,
    RetrainConfig,
    check_monitored_columns,
)
from kfloop.config.serving import Autoscaling, InferenceLogConfig, ServingConfig
from kfloop.config.slo import SloConfig
from kfloop.config.source import ColumnType, SourceConfig, SourceFormat
from kfloop.config.storage import LocalStorageConfig, S3StorageConfig, SecretRef, StorageConfig
from kfloop.config.stream import StreamConfig
from kfloop.config.tables import AttributeTable, TableSource
from kfloop.config.training import PromotionGate, ThresholdTarget, TrainingConfig
from kfloop.errors import ConfigError
from kfloop.layout import dataset_names

__all__ = [
    "Aggregate",
    "AlertRules",
    "AlertsConfig",
    "AttributeTable",
    "Autoscaling",
    "ClusterConfig",
    "ColumnType",
    "Config",
    "ContractConfig",
    "DriftTest",
    "FeatureViewSpec",
    "FeaturesConfig",
    "InferenceLogConfig",
    "KfpAuth",
    "LocalStorageConfig",
    "MonitoringConfig",
    "MonitoringWindow",
    "PromotionGate",
    "Resources",
    "RetrainConfig",
    "S3StorageConfig",
    "SchedulesConfig",
    "SecretRef",
    "ServingConfig",
    "SourceConfig",
    "SourceFormat",
    "StreamConfig",
    "TableSource",
    "ThresholdTarget",
    "TrainingConfig",
    "Webhook",
    "config_from_json",
    "config_schema",
    "config_to_json",
    "load_config",
    "parse_config",
]


class Config(Section):
    """The whole of ``kfloop.yaml``."""

    project: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="Project name (a DNS label of at most 40 characters: `<project>-materialize` must fit Argo's "
        "52-character CronWorkflow names).",
    )
    owner: str | None = Field(
        None,
        min_length=1,
        description="Who answers for the project's data and models (a team, a person, an email): the owner `kfloop "
        "catalog` lists for every dataset, feature view and model without an owner of its own.",
    )
    storage: StorageConfig = Field(
        LocalStorageConfig(), description="The workspace: a local directory or an S3 bucket (picked by `type`)."
    )
    source: SourceConfig = Field(description="The raw input file and its typed columns.")
    contract: ContractConfig = Field(ContractConfig(), description="The data contract the validate stage enforces.")
    features: FeaturesConfig = Field(
        FeaturesConfig(), description="Feast: feature views, online store, training splits."
    )
    training: TrainingConfig = Field(TrainingConfig(), description="Trainer, threshold choice and promotion gate.")
    serving: ServingConfig = Field(ServingConfig(), description="The KServe endpoint, locally and on a cluster.")
    monitoring: MonitoringConfig = Field(
        MonitoringConfig(), description="The drift check: window, minimum rows, tests and thresholds."
    )
    cluster: ClusterConfig = Field(
        ClusterConfig(), description="Kubeflow Pipelines and Kubernetes settings of compiled pipelines."
    )
    schedules: SchedulesConfig = Field(
        SchedulesConfig(),
        description="Argo CronWorkflows: the drift check, feature materialization and the periodic report on a clock.",
    )
    alerts: AlertsConfig = Field(
        AlertsConfig(),
        description="Webhook notifications of the loop's events and the thresholds of its Prometheus alert rules.",
    )
    slo: SloConfig = Field(
        SloConfig(), description="Service level objectives (freshness, pipeline runs, availability, latency)."
    )
    report: ReportConfig = Field(
        ReportConfig(), description="The periodic report of the model (`kfloop report`): period, PDF, delivery."
    )
    governance: GovernanceConfig = Field(
        GovernanceConfig(),
        description="Lineage (OpenLineage), roles (RBAC + Feast permissions + CLI checks) and retention periods.",
    )
    stream: StreamConfig | None = Field(
        None,
        description="Streaming feature updates (`kfloop stream run`): events from Redis Streams or Kafka update the "
        "online features of features.views within seconds; absent: only the materialize stage writes them.",
    )

    def request_columns(self) -> list[str]:
        """What a client sends per row: the entity keys, then the request features (no duplicates)."""
        return list(dict.fromkeys([*self.source.entity_keys, *self.features.request_features]))

    def table_config(self, name: str) -> Config:
        """This config as attribute table ``name`` sees it: the table as the source, its contract as the
        contract. What ingest and validate run on for a table (no label, no features of its own)."""
        table = self.features.table(name)
        return self.model_copy(
            update={
                "source": table.source_config(),
                "contract": table.contract_config(),
                "features": self.features.model_copy(update={"views": (), "tables": (), "request_features": ()}),
            }
        )

    @model_validator(mode="after")
    def _stream_fits(self) -> Config:
        if self.stream is None:
            return self
        if not self.features.views:
            raise ValueError("stream: features.views is empty: a stream updates the views' rolling aggregates")
        if self.source.replace:
            raise ValueError("stream: source.replace (a snapshot table) cannot be streamed: each file replaces it")
        if self.stream.source == "kafka" and self.stream.kafka is None:
            raise ValueError("stream.source is kafka: give stream.kafka (bootstrap_servers, topic)")
        claim, every = (parse_duration(d) for d in (self.stream.redis.claim_idle, self.stream.archive_every))
        if self.stream.source == "redis" and claim <= every:
            raise ValueError(
                f"stream.redis.claim_idle ({self.stream.redis.claim_idle}) must be longer than stream.archive_every "
                f"({self.stream.archive_every}): a worker's records stay pending until archived, and a shorter "
                "claim would hand a live worker's records to another"
            )
        return self

    @model_validator(mode="after")
    def _contract_names_known_columns(self) -> Config:
        known = self.source.columns
        check_contract(self.contract, self.source, "contract", "source.columns")
        taken = {n: "source.dataset" for n in dataset_names(self.source.dataset)}
        for i, table in enumerate(self.features.tables):
            where = f"features.tables.{i} ({table.name})"
            mine = dataset_names(table.name)
            clash = sorted(n for n in mine if n in taken)
            if clash:
                raise ValueError(
                    f"{where}: name {table.name!r} uses the workspace names of {taken[clash[0]]} ({', '.join(clash)}); "
                    "rename the table"
                )
            taken |= dict.fromkeys(mine, f"features.tables.{i}")
            try:
                check_contract(table.contract_config(), table.source_config(), "contract", "the table's columns")
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
            if table.key not in self.source.entity_keys:
                raise ValueError(
                    f"{where}: key {table.key!r} is not one of source.entity_keys "
                    f"({', '.join(self.source.entity_keys)}): the events must carry the key the table is joined on"
                )
            if table.source.columns[table.key] is not known[table.key]:
                raise ValueError(
                    f"{where}: key {table.key!r} is {table.source.columns[table.key].value} in the table but "
                    f"{known[table.key].value} in source.columns; a join needs one type"
                )
        for i, view in enumerate(self.features.views):
            cols = [view.entity, *(a.column for a in view.aggregates)]
            for col in cols:
                if col not in known:
                    raise ValueError(f"features.views.{i} ({view.name}): {col!r} is not in source.columns")
            for agg in view.aggregates:
                if agg.label_delay and agg.column != self.source.label_column:
                    raise ValueError(f"features.views.{i} ({view.name}): label_delay is for the label column only")
        check_inputs_known(self.source, self.features)
        check_monitored_columns(self.monitoring, [*self.features.feature_names(), *self.features.request_features])
        _check_label_type(self)
        reserved = {self.source.timestamp_column, self.source.label_column}
        leaking = [c for c in self.features.request_features if c in reserved]
        if leaking:
            raise ValueError(
                f"features.request_features: {', '.join(leaking)} cannot be a model input "
                "(the label and the event time are not request features)"
            )
        stored = self.features.feature_types()
        _check_stored_names(self.source, stored)
        clash = [c for c in self.features.request_features if c in stored]
        if clash:
            raise ValueError(
                f"features.request_features: {', '.join(clash)} also the name of a stored feature; rename one or set "
                "features.naming: full"
            )
        from_tables = {self.features.input_name(t.name, c) for t in self.features.tables for c in t.feature_names()}
        for col in self.features.categorical:
            if col in self.features.request_features:
                kind = known[col]
            elif col in from_tables:
                kind = stored[col]
            else:
                raise ValueError(
                    f"features.categorical: {col!r} is not one of features.request_features or a table's features"
                )
            if kind not in (ColumnType.INT64, ColumnType.STRING):
                raise ValueError(
                    f"features.categorical: {col!r} is {kind.value}; only int64 or string columns are categories"
                )
        for i, view in enumerate(self.features.views):
            for agg in view.aggregates:
                numeric_fns = [f for f in agg.functions if f in ("sum", "mean", "min", "max")]
                if numeric_fns and known[agg.column] not in (ColumnType.INT64, ColumnType.FLOAT64):
                    raise ValueError(
                        f"features.views.{i} ({view.name}): {', '.join(numeric_fns)} of "
                        f"{agg.column!r} needs a numeric column ({known[agg.column].value})"
                    )
        unknown_req = [c for c in self.features.request_features if c not in known]
        if unknown_req:
            raise ValueError(f"features.request_features: not in source.columns: {', '.join(unknown_req)}")
        return self


def check_contract(contract: ContractConfig, source: SourceConfig, prefix: str, origin: str) -> None:
    """Every column a contract names is declared, and each rule suits its column's type."""
    known = source.columns
    named = {f"{prefix}.columns.{c}": c for c in contract.columns}
    if contract.duplicates:
        named |= {f"{prefix}.duplicates.keys ({c})": c for c in contract.duplicates.keys}
    named |= {f"{prefix}.completeness.columns ({c})": c for c in contract.completeness.columns or ()}
    unknown = [path for path, col in named.items() if col not in known]
    if unknown:
        raise ValueError(f"not a column declared in {origin}: " + ", ".join(unknown))
    misfits = []
    for col, rule in contract.columns.items():
        typ = known[col]
        numeric = typ in (ColumnType.INT64, ColumnType.FLOAT64)
        for key in ("min", "max"):
            if getattr(rule, key) is not None and not numeric:
                misfits.append(f"{prefix}.columns.{col}.{key} needs a numeric column ({col} is {typ.value})")
        for key in ("allowed", "regex", "max_length"):
            if getattr(rule, key) is not None and typ is not ColumnType.STRING:
                misfits.append(f"{prefix}.columns.{col}.{key} needs a string column ({col} is {typ.value})")
    if misfits:
        raise ValueError("; ".join(misfits))
    if contract.rules:
        from kfloop.contract.checks import check_rules_compile
        from kfloop.schema import arrow_schema

        try:
            check_rules_compile(contract, arrow_schema(source))
        except ConfigError as err:
            raise ValueError(str(err)) from err


def _check_stored_names(src: SourceConfig, stored: Mapping[str, ColumnType]) -> None:
    """A stored feature (a table's column, under short naming) must not share a name with a column of the events
    the training set sends Feast: the point-in-time join would fail on a duplicate column, late and unclear."""
    joined = {k: "an entity key" for k in src.entity_keys} | {src.timestamp_column: "the event time"}
    if src.label_column:
        joined[src.label_column] = "the label"
    taken = [f"{c} ({joined[c]})" for c in stored if c in joined]
    if taken:
        raise ValueError(
            f"features: stored feature(s) named like a column of the events the training set joins on: "
            f"{', '.join(taken)}; rename the table's column or set features.naming: full (<view>__<feature>)"
        )


def _check_label_type(config: Config) -> None:
    """The label's declared type (and contract range) must suit ``training.task``: fail at load, not in the
    trainer ten minutes in."""
    label = config.source.label_column
    if label is None:
        return
    task, typ = config.training.task, config.source.columns[label]
    numeric = (ColumnType.INT64, ColumnType.FLOAT64)
    if task == "multiclass" and typ not in (ColumnType.INT64, ColumnType.STRING):
        raise ValueError(
            f"source.label_column: {label!r} is {typ.value}; training.task multiclass needs int64 or string classes"
        )
    if task == "regression" and typ not in numeric:
        raise ValueError(
            f"source.label_column: {label!r} is {typ.value}; training.task regression needs an int64 or float64 label"
        )
    if task == "binary":
        if typ not in (*numeric, ColumnType.BOOL):
            raise ValueError(
                f"source.label_column: {label!r} is {typ.value}; training.task binary needs a 0/1 label "
                "(int64, float64 or bool); for a numeric outcome set training.task: regression"
            )
        rule = config.contract.columns.get(label)
        if rule is not None and ((rule.min is not None and rule.min > 0) or (rule.max is not None and rule.max < 1)):
            raise ValueError(
                f"contract.columns.{label}: min/max exclude 0 or 1, but training.task binary needs a 0/1 label"
            )


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(whole config)"
        msg = e["msg"].removeprefix("Value error, ")
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
        raise ConfigError(_format_errors(err, origin)) from err


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from err
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err


def _merge(base: dict, overlay: dict) -> dict:
    """Overlay wins; mappings merge recursively, everything else (lists too) is replaced. A mapping whose
    ``type`` changes (e.g. storage local → s3) is replaced whole: its other keys belong to the old type."""
    out = dict(base)
    for key, value in overlay.items():
        old = out.get(key)
        same_kind = (
            isinstance(old, dict) and old.get("type", value.get("type")) == value.get("type")
            if isinstance(value, dict)
            else False
        )
        out[key] = _merge(old, value) if same_kind else value
    return out


def _resolve_extends(path: Path, data: Any, chain: tuple[Path, ...] = ()) -> Any:
    """``extends: other.yaml`` (relative to this file): start from that config, then apply this one."""
    if not isinstance(data, dict) or "extends" not in data:
        return data
    base_path = (path.parent / str(data.pop("extends"))).resolve()
    if base_path in chain:
        raise ConfigError(f"{path}: extends: cycle through {base_path}")
    base = _resolve_extends(base_path, _read_yaml(base_path), (*chain, path.resolve()))
    if not isinstance(base, dict):
        raise ConfigError(f"{base_path}: the top level must be a mapping")
    return _merge(base, data)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (with ``extends:`` resolved)."""
    p = Path(path)
    return parse_config(_resolve_extends(p, _read_yaml(p)), str(p))


def config_to_json(config: Config) -> str:
    """JSON form (field and column order kept), used to hand the config to pipeline steps as one parameter."""
    return json.dumps(config.model_dump(mode="json"))


def config_from_json(text: str) -> Config:
    """Inverse of :func:`config_to_json` (JSON mode lets strict fields accept their JSON forms)."""
    try:
        return Config.model_validate_json(text)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, "<pipeline config parameter>")) from err


def config_schema() -> dict[str, Any]:
    """JSON Schema of ``kfloop.yaml`` (for editors and ``kfloop config schema``)."""
    return Config.model_json_schema()
