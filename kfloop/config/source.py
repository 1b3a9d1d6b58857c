"""The ``source`` section: where raw data comes from and what its columns are."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from kfloop.column_types import ColumnType
from kfloop.config._base import Section
from kfloop.config.availability import Availability, check_available_after
from kfloop.config.contract import DURATION_PATTERN
from kfloop.config.derived import DerivedColumn, check_derived, merge_declared
from kfloop.formats import FileFormat

SourceFormat = Literal["auto", FileFormat]


class FileSource(Section):
    """A file of typed rows and how to read it: what the main source and every attribute table share."""

    uri: str = Field(min_length=1, description="Local path, s3://bucket/key or http(s):// URL of the source file.")
    format: SourceFormat = Field("auto", description="File format; 'auto' picks it from the file extension.")
    columns: dict[str, ColumnType] = Field(
        min_length=1, description="Every column of the file kept, with its type (derived columns are added after)."
    )
    derived: dict[str, DerivedColumn] = Field(
        default_factory=dict,
        description="Columns computed at ingest, in order: name → {expression, type}; later ones may use earlier ones.",
    )
    null_values: tuple[str, ...] = Field(
        (), description="Extra text values meaning 'no value' in every format (e.g. NA), besides '', NULL, null."
    )
    timezone: str | None = Field(
        None, description="IANA zone of naive timestamps (offsets are kept); null: UTC. DST: see the README."
    )
    encoding: str = Field("utf-8", min_length=1, description="Text encoding of CSV and JSON Lines (a BOM is skipped).")
    batch_rows: int = Field(100_000, ge=1_000, le=10_000_000, description="Rows per streamed batch.")
    csv_delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator of CSV sources.")
    allowed_lateness: str = Field(
        "0s",
        pattern=DURATION_PATTERN,
        description="How far before the watermark a new row's event time may be and still be ingested (late data, "
        "label updates); older new rows are kept aside as too late and reported. 0s: only rows after the watermark.",
    )

    @field_serializer("columns")
    def _file_columns_only(self, columns: dict[str, ColumnType]) -> dict[str, ColumnType]:
        """Dump what the user declared, so a dumped config loads again (derived ones are re-added)."""
        return {c: t for c, t in columns.items() if c not in self.derived}

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        from kfloop.timezones import check_zone

        return None if value is None else check_zone(value)

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as err:
            raise ValueError(f"{value!r} is not a known text encoding (e.g. utf-8, latin-1, cp1252)") from err
        return value

    @property
    def file_columns(self) -> dict[str, ColumnType]:
        """The columns read from the file (``columns`` without the derived ones)."""
        return {c: t for c, t in self.columns.items() if c not in self.derived}


class SourceConfig(FileSource):
    """Raw input: a file URI (local path, ``s3://bucket/key`` or ``http(s)://``) and its typed columns."""

    dataset: str = Field("transactions", pattern=r"^[a-z][a-z0-9_]*$", description="Lake dataset name.")
    entity_keys: tuple[str, ...] = Field(min_length=1, description="Columns identifying the entities.")
    timestamp_column: str = Field(description="Event-time column; partitions the lake and drives watermarks.")
    label_column: str | None = Field(None, description="Training label column, if the source carries labels.")
    available_after: dict[str, Availability] = Field(
        default_factory=dict,
        description="Columns known only after their event: column → a delay (2h) or {at: timestamp_column} (null: "
        "not known yet). Aggregates use a value only from then on; such a column cannot be a request feature.",
    )
    replace: bool = Field(
        False,
        description="Each ingest of a changed file replaces the whole dataset with its rows (no watermark, no "
        "late rows): how a snapshot table of features.tables is ingested. false: rows are appended by event time.",
    )
    owner: str | None = Field(
        None,
        min_length=1,
        description="Who answers for the dataset (a team, a person, an email), as `kfloop catalog` lists it for the "
        "raw, clean and quarantine datasets; null: the project's `owner`.",
    )
    description: str | None = Field(
        None, min_length=1, description="What the dataset holds, in a sentence (shown by `kfloop catalog`)."
    )

    @model_validator(mode="after")
    def _keys_are_columns(self) -> SourceConfig:
        merge_declared(self)
        check_derived(self.derived, self.columns)
        named = {"entity_keys": self.entity_keys, "timestamp_column": (self.timestamp_column,)}
        if self.label_column is not None:
            named["label_column"] = (self.label_column,)
        for field, cols in named.items():
            for col in cols:
                if col not in self.columns:
                    raise ValueError(f"{field}: column {col!r} is not declared in source.columns")
        if self.columns[self.timestamp_column] is not ColumnType.TIMESTAMP:
            raise ValueError(f"timestamp_column: column {self.timestamp_column!r} must have type 'timestamp'")
        never_late = {self.timestamp_column: "the event time"} | {k: "an entity key" for k in self.entity_keys}
        check_available_after(self.available_after, self.columns, never_late, ColumnType.TIMESTAMP)
        return self
