"""Logical column types → Arrow types, and the schema hash recorded in manifests."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from kfloop.config import ColumnType, SourceConfig

#: Partition column added to every lake dataset (Hive style: ``event_date=YYYY-MM-DD``).
PARTITION_COLUMN = "event_date"

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.STRING: pa.string(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


def arrow_schema(source: SourceConfig) -> pa.Schema:
    """The lake schema of a source, in config column order (timestamps are UTC, microseconds)."""
    return pa.schema([pa.field(name, ARROW_TYPES[typ]) for name, typ in source.columns.items()])


def schema_hash(schema: pa.Schema) -> str:
    """Stable hash of column names and types (not metadata), to detect schema changes cheaply."""
    canon = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
