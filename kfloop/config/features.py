"""The ``features`` section: every feature the loop uses, declared once.

Feast objects (entities, feature views, the feature service), the feature stage's aggregations and
the names the model sees all derive from this section. A feature is stored in its view as
``<column>_<function>_<window>`` (e.g. ``amount_sum_24h``); ``seconds_since_previous`` is added
when ``time_since_previous`` is on. The model sees it under that name (``naming: short``) or as
``<view>__<feature>`` (``naming: full``, Feast's ``full_feature_names=True``), so the same aggregate
can exist in several views.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kfloop.column_types import ColumnType
from kfloop.config._base import Section
from kfloop.config.contract import DURATION_PATTERN, parse_duration
from kfloop.config.storage import SecretRef
from kfloop.config.tables import AttributeTable

Function = Literal["count", "sum", "mean", "min", "max", "count_distinct"]
Window = Annotated[str, Field(pattern=DURATION_PATTERN)]
Naming = Literal["short", "full"]
#: Aggregate functions whose value is an integer (the rest are float64).
INTEGER_FUNCTIONS = ("count", "count_distinct")

#: Columns of every offline feature table besides the entity key and the features (the Feast source's
#: timestamp field, and the optional gap since the entity's previous event).
FEATURE_TIMESTAMP = "event_timestamp"
TIME_SINCE_PREVIOUS = "seconds_since_previous"
#: The longest features.training_window (100 years): longer is "every event", and overflows time arithmetic.
MAX_TRAINING_WINDOW_DAYS = 36500

#: Features are read as of just before the event (``t - 1 µs``): the training set's point-in-time join asks
#: Feast for them at that time, and serving counts a view's TTL back from it, so both drop the same values.
AS_OF_OFFSET = timedelta(microseconds=1)

#: Between the view and the feature in a full name: Feast's own separator for ``full_feature_names=True``.
FULL_NAME_SEPARATOR = "__"


def feature_name(column: str, function: str, window: str) -> str:
    """The stored name of one aggregate, e.g. ``amount_mean_24h``: the one formula config, the aggregation
    engine and the Feast definitions share."""
    return f"{column}_{function}_{window}"


class Aggregate(Section):
    """Rolling aggregates of one column over trailing windows ``(t - window, t]`` per entity."""

    column: str = Field(description="Source column aggregated.")
    functions: tuple[Function, ...] = Field(
        min_length=1, description="Aggregations, one feature per function and window."
    )
    windows: tuple[Window, ...] = Field(min_length=1, description="Trailing windows as durations (1h, 24h, 7d).")
    label_delay: bool = Field(
        False,
        description="The column is a label known only after features.label_delay: use it only then (the label's "
        "case of source.available_after, which applies to every aggregate of a column).",
    )

    def names(self) -> list[str]:
        return [feature_name(self.column, fn, w) for fn in self.functions for w in self.windows]


class FeatureViewSpec(Section):
    """One Feast feature view: aggregates keyed by one entity column, materialized online."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Feast feature view name.")
    entity: str = Field(description="Entity join-key column, e.g. customer_id.")
    ttl: str = Field("30d", description="How old a feature row may be and still be served / joined.")
    aggregates: tuple[Aggregate, ...] = Field(min_length=1, description="The view's rolling aggregates.")
    time_since_previous: bool = Field(
        False, description="Add seconds_since_previous: the gap to the entity's previous event."
    )
    owner: str | None = Field(
        None, min_length=1, description="Who answers for the view (shown by `kfloop catalog`); null: the project's."
    )
    description: str | None = Field(
        None, min_length=1, description="What the view's features describe, in a sentence (shown by `kfloop catalog`)."
    )

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    def feature_names(self) -> list[str]:
        names = [n for agg in self.aggregates for n in agg.names()]
        return [*names, TIME_SINCE_PREVIOUS] if self.time_since_previous else names


class SqliteStore(Section):
    type: Literal["sqlite"] = Field("sqlite", description="Embedded SQLite file in the workspace (feast/online.db).")


class RedisStore(Section):
    """Redis online store; the connection string usually comes from a secret via ``${VAR}``."""

    type: Literal["redis"] = Field(description="Redis (a cluster's online store).")
    connection_string: str = Field("${REDIS_CONNECTION_STRING}", description="host:port[,password=...]")
    secret: SecretRef | None = Field(
        SecretRef(env="REDIS_CONNECTION_STRING", secret_name="kfloop-redis", secret_key="connection-string"),
        description="On a cluster, the Kubernetes Secret that provides the variable used in connection_string.",
    )


class FeaturesConfig(Section):
    """Feast feature store settings and feature definitions."""

    naming: Naming = Field(
        "short",
        description="How the model's inputs name stored features: short `<feature>` (Feast's default, "
        "full_feature_names=False; names must be unique across views) or full `<view>__<feature>` (Feast's "
        "full_feature_names=True; the same aggregate may exist in several views). Changing it needs a retrain.",
    )

    feast_project: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$", description="Default: project name.")
    online_store: Annotated[SqliteStore | RedisStore, Field(discriminator="type")] = Field(
        SqliteStore(), description="Where serving reads features: sqlite or redis (picked by `type`)."
    )
    registry: str | None = Field(None, description="Registry path/URI; default: `<workspace>/feast/registry.db`.")
    views: tuple[FeatureViewSpec, ...] = Field((), description="Feature views, each keyed by one entity column.")
    tables: tuple[AttributeTable, ...] = Field(
        (),
        description="Attribute tables: further sources keyed by an entity, each with its own contract, served as a "
        "feature view of its columns (joined point-in-time in training, looked up online at serving).",
    )
    request_features: tuple[str, ...] = Field(
        (),
        description="Columns sent with each request (not stored) that the model takes as inputs; entity keys may "
        "be listed too, to use them as categorical inputs.",
    )
    categorical: tuple[str, ...] = Field(
        (),
        description="Integer request features or int64 table features to treat as categories (codes such as "
        "month, day of week or hour) rather than numbers; string ones are always categorical.",
    )
    service: str = Field("model_features", pattern=r"^[a-z][a-z0-9_]*$", description="Feast feature service.")
    label_delay: str = Field(
        "7d", description="How long after an event its label becomes known (for aggregates with label_delay: true)."
    )
    freshness_sla: str = Field("15m", description="Max materialization lag before features count as stale.")
    splits: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Train/validation/test by time.")
    training_window: str | None = Field(
        None,
        description="Train on the newest labelled events only: those within this long (21d, 90d; at least 1d) of "
        "the newest one, before the splits are cut; a retrain after drift then learns, and profiles, the recent "
        "traffic. null: every labelled event.",
    )

    @field_validator("label_delay", "freshness_sla")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("training_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not 0 < parse_duration(value).days <= MAX_TRAINING_WINDOW_DAYS:
            raise ValueError(
                f"{value!r}: give a window of at least a day and at most {MAX_TRAINING_WINDOW_DAYS}d (null: every "
                "labelled event); a shorter one leaves too few events to split, train and judge"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesConfig:
        if abs(sum(self.splits) - 1.0) > 1e-9 or min(self.splits) <= 0:
            raise ValueError(f"splits {self.splits} must be positive and sum to 1")
        views = [v.name for v in self.views] + [t.name for t in self.tables]
        twice = sorted({v for v in views if views.count(v) > 1})
        if twice:
            raise ValueError(
                f"feature view names must be unique (features.views and features.tables together): "
                f"{', '.join(twice)} used twice"
            )
        for v in self.views:
            names = v.feature_names()
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"feature names defined twice in view {v.name}: {', '.join(dupes)}")
        stored = self.stored_features()
        names = [n for _, n, _ in stored]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes and self.naming == "short":
            owners = {n: ", ".join(v for v, s, _ in stored if s == n) for n in dupes}
            where = "; ".join(f"{n} (views {vs})" for n, vs in owners.items())
            raise ValueError(
                f"feature names defined twice: {where}"
                f": set features.naming: full to name model inputs <view>{FULL_NAME_SEPARATOR}<feature>, as "
                "Feast's full_feature_names=True does (models trained before the change must be retrained)"
            )
        return self

    def input_name(self, view: str, feature: str) -> str:
        """The model's name for ``feature`` of ``view`` under ``naming``."""
        return f"{view}{FULL_NAME_SEPARATOR}{feature}" if self.naming == "full" else feature

    def stored_features(self) -> list[tuple[str, str, str]]:
        """(view, stored name, model input name) of every stored feature: aggregate views, then tables."""
        pairs = [(v.name, n) for v in self.views for n in v.feature_names()]
        pairs += [(t.name, n) for t in self.tables for n in t.feature_names()]
        return [(v, n, self.input_name(v, n)) for v, n in pairs]

    def feature_names(self) -> list[str]:
        """Every stored feature as the model names it, in view order (tables last): its input order before
        request features (and the training set's and the inference log's columns)."""
        return [name for _, _, name in self.stored_features()]

    def feature_types(self) -> dict[str, ColumnType]:
        """Model input name → type of every stored feature: counts are int64, other aggregates and gaps
        float64, a table's columns keep their declared type."""
        types: dict[str, ColumnType] = {}
        for v in self.views:
            for agg in v.aggregates:
                for fn in agg.functions:
                    kind = ColumnType.INT64 if fn in INTEGER_FUNCTIONS else ColumnType.FLOAT64
                    types |= {self.input_name(v.name, feature_name(agg.column, fn, w)): kind for w in agg.windows}
            if v.time_since_previous:
                types[self.input_name(v.name, TIME_SINCE_PREVIOUS)] = ColumnType.FLOAT64
        for t in self.tables:
            types |= {self.input_name(t.name, c): t.source.columns[c] for c in t.feature_names()}
        return types

    def table(self, name: str) -> AttributeTable:
        """The attribute table called ``name`` (a KeyError names the known ones)."""
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(
            f"no attribute table {name!r} in features.tables (known: {', '.join(t.name for t in self.tables)})"
        )
