"""Logical column types → Arrow types, and the schema hash recorded in manifests.

Below the config: it needs only the column types (``kfloop.column_types``) and anything with typed
``columns`` (a ``SourceConfig``), so ``kfloop.config`` can use it without an import cycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

import pyarrow as pa

from kfloop.column_types import ColumnType

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.STRING: pa.string(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


class TypedColumns(Protocol):
    """What ``arrow_schema`` reads of a source: ``kfloop.config.SourceConfig`` is one."""

    @property
    def columns(self) -> Mapping[str, ColumnType]: ...


def arrow_schema(source: TypedColumns) -> pa.Schema:
    """The lake schema of a source, in config column order (timestamps are UTC, microseconds)."""
    return pa.schema([pa.field(name, ARROW_TYPES[typ]) for name, typ in source.columns.items()])


def schema_hash(schema: pa.Schema) -> str:
    """Stable hash of column names and types (not metadata), to detect schema changes cheaply."""
    canon = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
