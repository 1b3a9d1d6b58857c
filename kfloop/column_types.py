"""The logical column types of a source, defined below both the config and the Arrow mapping.

``kfloop.config`` (``source.columns``) and ``kfloop.schema`` (column type -> Arrow type) both need them;
living here, neither imports the other for them, so the config may use the schema without a cycle.
"""

from __future__ import annotations

from enum import StrEnum


class ColumnType(StrEnum):
    """Logical column types; each maps to one Arrow type in the lake (see ``kfloop.schema``)."""

    INT64 = "int64"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
