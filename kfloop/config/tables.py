"""``features.tables``: attribute (dimension) tables, each a second source keyed by one entity.

A table of attributes (a station's capacity, an airport's region) or of readings keyed by an entity and a
time (hourly weather per location) is ingested and validated on its own, under its own contract, into its
own lake dataset, and becomes a Feast feature view of its columns. Feast joins it point-in-time in the
training set (the row valid at the event) and the serving path looks it up online by the same key, so a
client sends the key only, never the attributes.

A table without ``timestamp_column`` is a snapshot: every row is valid for every event (from the epoch),
the file is the table (re-ingesting a changed file replaces the table with its rows: changed keys are
updated, removed keys go, a reverted file reverts), and nothing expires (``ttl: 0s``).
"""

from __future__ import annotations

import json

from pydantic import Field, field_validator, model_validator

from kfloop.column_types import ColumnType
from kfloop.config._base import Section
from kfloop.config.contract import ContractConfig, Duplicates, parse_duration
from kfloop.config.derived import DerivedColumn, check_derived, merge_declared
from kfloop.config.source import FileSource, SourceConfig

#: The time column a snapshot table gets at ingest: every row valid from the epoch, so it joins any event.
VALID_FROM = "valid_from"
VALID_FROM_EXPRESSION = "timestamp('1970-01-01T00:00:00Z')"


class TableSource(FileSource):
    """The table's file and typed columns; the time column is optional."""

    timestamp_column: str | None = Field(
        None,
        description="When each row's values became valid (an hourly reading, a price change); the training set "
        "joins the row valid at each event. null: a snapshot, valid for every event, replaced by each changed file.",
    )

    @model_validator(mode="after")
    def _columns(self) -> TableSource:
        merge_declared(self)
        check_derived(self.derived, self.columns)
        ts = self.timestamp_column
        if ts is not None:
            if ts not in self.columns:
                raise ValueError(f"timestamp_column: column {ts!r} is not declared in columns")
            if self.columns[ts] is not ColumnType.TIMESTAMP:
                raise ValueError(f"timestamp_column: column {ts!r} must have type 'timestamp'")
        elif VALID_FROM in self.columns:
            raise ValueError(
                f"columns: {VALID_FROM!r} is the time column a snapshot table gets; set timestamp_column: "
                f"{VALID_FROM} if the file's column is one, or rename it"
            )
        return self


class AttributeTable(Section):
    """An attribute table keyed by one entity: its own source and contract, one Feast feature view."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Feast feature view name and lake dataset name.")
    key: str = Field(description="Join key column: one of source.entity_keys, the events' column it matches.")
    source: TableSource = Field(description="The table's file, columns and reading options.")
    contract: ContractConfig = Field(
        ContractConfig(),
        description="The table's own data contract. Without a duplicates rule, one row per key (and time) is "
        "kept: the last ingested, so a re-ingested file updates attributes.",
    )
    features: tuple[str, ...] = Field(
        (), description="Columns served as features; empty: every column but the key and the time column."
    )
    ttl: str = Field(
        "0s", description="How old a row may be and still be joined / served; 0s: never expires (as in Feast)."
    )

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AttributeTable:
        cols = self.source.columns
        if self.key not in cols:
            raise ValueError(f"key: column {self.key!r} is not declared in source.columns")
        if cols[self.key] not in (ColumnType.STRING, ColumnType.INT64):
            raise ValueError(f"key: column {self.key!r} is {cols[self.key].value}; a join key is string or int64")
        reserved = {self.key: "the key", self.timestamp_column: "the time column"}
        for col in self.features:
            if col not in cols:
                raise ValueError(f"features: {col!r} is not declared in source.columns")
            if col in reserved:
                raise ValueError(f"features: {col!r} is {reserved[col]}, not a feature")
            if cols[col] is ColumnType.TIMESTAMP:
                raise ValueError(f"features: {col!r} is a timestamp; derive a number from it (e.g. hour(...))")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a column is named twice")
        if not self.feature_names():
            raise ValueError("features: the table has no column to serve besides its key and time")
        return self

    @property
    def timestamp_column(self) -> str:
        """The table's time column in the lake (``valid_from`` for a snapshot)."""
        return self.source.timestamp_column or VALID_FROM

    @property
    def snapshot(self) -> bool:
        return self.source.timestamp_column is None

    def feature_names(self) -> list[str]:
        """The columns stored in the view, in order."""
        if self.features:
            return list(self.features)
        skip = {self.key, self.timestamp_column}
        return [c for c, t in self.source.columns.items() if c not in skip and t is not ColumnType.TIMESTAMP]

    def source_config(self) -> SourceConfig:
        """The table as a source: what ingest and validate read (a snapshot gets its ``valid_from``)."""
        src = self.source
        derived = dict(src.derived)
        if self.snapshot:  # replaced by each changed file: no watermark, so no lateness either
            derived[VALID_FROM] = DerivedColumn(expression=VALID_FROM_EXPRESSION, type=ColumnType.TIMESTAMP)
        body = src.model_dump(mode="json", exclude={"timestamp_column", "derived"})
        return SourceConfig.model_validate_json(  # JSON mode: the strict fields take their JSON forms
            json.dumps(
                {
                    **body,
                    "derived": {n: d.model_dump(mode="json") for n, d in derived.items()},
                    "dataset": self.name,
                    "entity_keys": [self.key],
                    "timestamp_column": self.timestamp_column,
                    "replace": self.snapshot,
                }
            )
        )

    def contract_config(self) -> ContractConfig:
        """The table's contract; without a duplicates rule, the last ingested row per key (and time) wins."""
        if self.contract.duplicates is not None:
            return self.contract
        keys = (self.key,) if self.snapshot else (self.key, self.timestamp_column)
        return self.contract.model_copy(update={"duplicates": Duplicates(keys=keys, mode="keep_last_ingested")})
