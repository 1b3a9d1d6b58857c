"""Feast objects built from the ``features`` section: entities, feature views, the feature service.

Nothing here is declared by hand: names, types and TTLs come from ``kfloop.yaml``, so the feature
stage, Feast and the model agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, PrimitiveFeastType, String

from kfloop.config import ColumnType, Config, FeatureViewSpec
from kfloop.config.contract import parse_duration
from kfloop.config.features import FEATURE_TIMESTAMP, TIME_SINCE_PREVIOUS, feature_name

_VALUE_TYPES = {ColumnType.STRING: ValueType.STRING, ColumnType.INT64: ValueType.INT64}
_FEAST_TYPES: dict[ColumnType, PrimitiveFeastType] = {ColumnType.STRING: String, ColumnType.INT64: Int64}
#: Output type per aggregate function (see kfloop.aggregates): counts are integers, the rest floats.
_FUNCTION_TYPES = {"count": Int64, "count_distinct": Int64}


@dataclass(frozen=True)
class FeastObjects:
    """Everything ``feast apply`` registers for one kfloop config."""

    entities: list[Entity]
    views: list[FeatureView]
    service: FeatureService

    @property
    def all(self) -> list:
        return [*self.entities, *self.views, self.service]

    def view(self, name: str) -> FeatureView:
        return next(v for v in self.views if v.name == name)


def entity_name(column: str) -> str:
    """``customer_id`` → ``customer``: the Feast entity for a join-key column."""
    return column.removesuffix("_id")


def _schema(view: FeatureViewSpec, config: Config) -> list[Field]:
    fields = [Field(name=view.entity, dtype=_FEAST_TYPES.get(config.source.columns[view.entity], String))]
    for agg in view.aggregates:
        for fn in agg.functions:
            fields += [
                Field(name=feature_name(agg.column, fn, w), dtype=_FUNCTION_TYPES.get(fn, Float64)) for w in agg.windows
            ]
    if view.time_since_previous:
        fields.append(Field(name=TIME_SINCE_PREVIOUS, dtype=Float64))
    return fields


def build_objects(config: Config, source_uri: dict[str, str], s3_endpoint: str | None = None) -> FeastObjects:
    """Feast objects for ``config``; ``source_uri`` maps each view to its offline Parquet file."""
    entity_cols = list(dict.fromkeys(v.entity for v in config.features.views))
    entities = {
        col: Entity(
            name=entity_name(col),
            join_keys=[col],
            value_type=_VALUE_TYPES.get(config.source.columns[col], ValueType.STRING),
            description=f"kfloop entity keyed by {col}",
        )
        for col in entity_cols
    }
    views = [
        FeatureView(
            name=view.name,
            entities=[entities[view.entity]],
            ttl=parse_duration(view.ttl),
            schema=_schema(view, config),
            source=FileSource(
                name=f"{view.name}_source",
                path=source_uri[view.name],
                timestamp_field=FEATURE_TIMESTAMP,
                s3_endpoint_override=s3_endpoint,
            ),
            online=True,
            tags={"kfloop.project": config.project},
        )
        for view in config.features.views
    ]
    service = FeatureService(
        name=config.features.service, features=views, description=f"features of the {config.project} model"
    )
    return FeastObjects(list(entities.values()), views, service)
