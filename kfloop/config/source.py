"""The ``source`` section: where raw data comes from and what its columns are."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kfloop.column_types import ColumnType
from kfloop.config._base import Section
from kfloop.formats import FileFormat

SourceFormat = Literal["auto", FileFormat]


class SourceConfig(Section):
    """Raw input: a file URI (local path, ``s3://bucket/key`` or ``http(s)://``) and its typed columns."""

    uri: str = Field(min_length=1, description="Local path, s3://bucket/key or http(s):// URL of the source file.")
    format: SourceFormat = Field("auto", description="File format; 'auto' picks it from the file extension.")
    dataset: str = Field("transactions", pattern=r"^[a-z][a-z0-9_]*$", description="Lake dataset name.")
    entity_keys: tuple[str, ...] = Field(min_length=1, description="Columns identifying the entities.")
    timestamp_column: str = Field(description="Event-time column; partitions the lake and drives watermarks.")
    label_column: str | None = Field(None, description="Training label column, if the source carries labels.")
    columns: dict[str, ColumnType] = Field(min_length=1, description="Every column kept, with its type.")
    batch_rows: int = Field(100_000, ge=1_000, le=10_000_000, description="Rows per streamed batch.")
    csv_delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator of CSV sources.")

    @model_validator(mode="after")
    def _keys_are_columns(self) -> SourceConfig:
        named = {"entity_keys": self.entity_keys, "timestamp_column": (self.timestamp_column,)}
        if self.label_column is not None:
            named["label_column"] = (self.label_column,)
        for field, cols in named.items():
            for col in cols:
                if col not in self.columns:
                    raise ValueError(f"{field}: column {col!r} is not declared in source.columns")
        if self.columns[self.timestamp_column] is not ColumnType.TIMESTAMP:
            raise ValueError(f"timestamp_column: column {self.timestamp_column!r} must have type 'timestamp'")
        return self
