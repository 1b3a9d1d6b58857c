"""``source.derived``: columns computed at ingest from an expression, and their checks at config load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from kfloop.column_types import ColumnType
from kfloop.config._base import Section


class DerivedColumn(Section):
    """A column computed from the file's columns (and earlier derived ones) after the cast."""

    expression: str = Field(min_length=1, description="Expression in the rules' language, e.g. 'amount > 100'.")
    type: ColumnType = Field(description="Type stored in the lake; a true/false result may be int64 (1/0).")


def merge_declared(source: Any) -> None:
    """Add the derived columns, with their types, after the file's in ``source.columns`` (once, while the config
    validates), so every stage after ingest sees one list of real columns. A name in both is declared twice."""
    if not source.derived:
        return
    both = [name for name in source.derived if name in source.columns]
    if both:
        raise ValueError(f"derived: {', '.join(both)} also declared in columns; declare each column once")
    merged = {**source.columns, **{name: d.type for name, d in source.derived.items()}}
    source.__dict__["columns"] = merged  # frozen after validation; this is still part of validating it


def check_derived(derived: Mapping[str, DerivedColumn], columns: Mapping[str, ColumnType]) -> None:
    """Each expression, in order, over the file's columns and the derived ones before it: unknown columns and
    type errors fail with the key path."""
    if not derived:
        return
    from kfloop.expressions import ExpressionError, infer, storable  # Arrow and pandas: only when columns are derived

    known = {c: t for c, t in columns.items() if c not in derived}
    for name, col in derived.items():
        where = f"derived.{name}.expression"
        try:
            result = infer(col.expression, known)
        except ExpressionError as err:
            raise ValueError(f"{where}: {err}") from err
        if not storable(result, col.type):
            raise ValueError(
                f"{where}: {col.expression!r} gives {result.value}, which cannot be stored as {col.type.value}"
            )
        known[name] = col.type
