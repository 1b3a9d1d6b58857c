"""Feast objects built from the ``features`` section: entities, feature views, the feature service (and the
permissions of ``governance.roles``).

Nothing here is declared by hand: names, types and TTLs come from ``kfloop.yaml``, so the feature
stage, Feast and the model agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.permissions.permission import Permission
from feast.types import Bool, Float64, Int64, PrimitiveFeastType, String

from kfloop.config import ColumnType, Config
from kfloop.config.contract import parse_duration
from kfloop.config.features import FEATURE_TIMESTAMP
from kfloop.feature_repo.permissions import build_permissions

_VALUE_TYPES = {ColumnType.STRING: ValueType.STRING, ColumnType.INT64: ValueType.INT64}
#: Feast type of a stored column (feature or join key) of each kfloop column type; timestamps are never stored.
_FEAST_TYPES: dict[ColumnType, PrimitiveFeastType] = {
    ColumnType.STRING: String,
    ColumnType.INT64: Int64,
    ColumnType.FLOAT64: Float64,
    ColumnType.BOOL: Bool,
}


@dataclass(frozen=True)
class FeastObjects:
    """Everything ``feast apply`` registers for one kfloop config."""

    entities: list[Entity]
    views: list[FeatureView]
    service: FeatureService
    #: governance.roles as Feast permissions (none without roles): applied with the rest
    permissions: list[Permission] = field(default_factory=list)

    @property
    def all(self) -> list:
        return [*self.entities, *self.views, self.service, *self.permissions]

    def view(self, name: str) -> FeatureView:
        return next(v for v in self.views if v.name == name)


def entity_name(column: str) -> str:
    """``customer_id`` → ``customer``: the Feast entity for a join-key column."""
    return column.removesuffix("_id")


def view_keys(config: Config) -> dict[str, str]:
    """Feature view name → its join-key column: the aggregate views, then the attribute tables."""
    feats = config.features
    return {v.name: v.entity for v in feats.views} | {t.name: t.key for t in feats.tables}


def _schema(view: str, features: list[str], key: str, config: Config) -> list[Field]:
    """The join key, then the features with their stored types (``features.feature_types()``: the one
    place that types aggregates, gaps and table columns)."""
    types = config.features.feature_types()
    fields = [Field(name=key, dtype=_FEAST_TYPES.get(config.source.columns[key], String))]
    return fields + [Field(name=f, dtype=_FEAST_TYPES[types[config.features.input_name(view, f)]]) for f in features]


def build_objects(config: Config, source_uri: dict[str, str], s3_endpoint: str | None = None) -> FeastObjects:
    """Feast objects for ``config``; ``source_uri`` maps each view (and attribute table) to its offline
    Parquet file. A table is a view like the others: keyed by its entity (shared with the views of the same
    key), its columns as features, its ``ttl`` (0s: never expires)."""
    feats = config.features
    keys = view_keys(config)
    entity_cols = list(dict.fromkeys(keys.values()))
    entities = {
        col: Entity(
            name=entity_name(col),
            join_keys=[col],
            value_type=_VALUE_TYPES.get(config.source.columns[col], ValueType.STRING),
            description=f"kfloop entity keyed by {col}",
        )
        for col in entity_cols
    }
    specs = [(v.name, v.ttl, v.feature_names()) for v in feats.views]
    specs += [(t.name, t.ttl, t.feature_names()) for t in feats.tables]
    views = [
        FeatureView(
            name=name,
            entities=[entities[keys[name]]],
            ttl=parse_duration(ttl),
            schema=_schema(name, features, keys[name], config),
            source=FileSource(
                name=f"{name}_source",
                path=source_uri[name],
                timestamp_field=FEATURE_TIMESTAMP,
                s3_endpoint_override=s3_endpoint,
            ),
            online=True,
            tags={"kfloop.project": config.project},
        )
        for name, ttl, features in specs
    ]
    service = FeatureService(
        name=config.features.service, features=views, description=f"features of the {config.project} model"
    )
    return FeastObjects(list(entities.values()), views, service, build_permissions(config))
