"""Cast raw batches to the configured schema, row by row where needed, without losing a row.

The fast path is one Arrow cast per column. Only when it fails does the column go through a
per-row parse; rows that still fail are split off with a reason naming the column and the value,
so the caller can quarantine them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.schema import ARROW_TYPES
from kfloop.timezones import parse_timestamps

#: Columns added to quarantined rows: why, and where in the source file.
REASON_COLUMN = "_reason"
ROW_COLUMN = "_row"
SOURCE_COLUMN = "_source"

LOGICAL_NAMES = {arrow: logical.value for logical, arrow in ARROW_TYPES.items()}
#: The two per-column reasons ``cast_batch`` writes (``<column>: <why>``); :func:`reason_causes` reads them back.
MISSING = "missing value (required)"
NOT_VALID = "is not a valid "
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass(frozen=True)
class CastResult:
    """Typed good rows, and the failing rows as raw strings with reasons."""

    good: pa.Table
    bad: pa.Table  # raw columns as strings + _row + _reason


def _parse_int(text: str | None, lo: int, hi: int) -> int | None:
    """An integer written as digits, or as a float with no fraction (``5.0``, ``1e3``); exact beyond 2**53."""
    if text is None:
        return None
    t = text.strip()
    if not t.isascii() or "_" in t:  # Python's int() also takes "1_000" and non-ASCII digits; Arrow does not
        return None
    try:
        n = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            return None
        if not np.isfinite(f) or not f.is_integer():
            return None
        n = int(f)
    return n if lo <= n <= hi else None


def _slow_parse(arr: pa.Array, target: pa.DataType, timezone: str | None = None) -> pa.Array:
    """Per-row parse of a string array; unparsable values become null."""
    if pa.types.is_timestamp(target):
        return parse_timestamps(arr, target, timezone)[0]
    s = pd.Series(arr.to_pandas(), dtype="object")
    if pa.types.is_boolean(target):
        low = s.str.strip().str.lower()
        out = pd.Series(np.where(low.isin(_TRUE), True, np.where(low.isin(_FALSE), False, None)), dtype="object")
        return pa.array(out, type=target, from_pandas=True)
    if pa.types.is_integer(target):
        bits = target.bit_width
        lo, hi = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if pa.types.is_signed_integer(target) else (0, (1 << bits) - 1)
        )
        return pa.array([_parse_int(v, lo, hi) for v in arr.to_pylist()], type=target)
    nums = pd.to_numeric(s.str.strip(), errors="coerce")
    keep_nan = s.str.strip().str.lower().isin(["nan", "+nan", "-nan"])
    values = np.where(keep_nan, np.nan, nums.to_numpy(dtype="float64", na_value=np.nan))
    mask = (nums.isna() & ~keep_nan).to_numpy()
    return pa.array(values, type=target, mask=mask)


def _cast_column(arr: pa.Array, target: pa.DataType, timezone: str | None = None) -> pa.Array:
    """Cast one column; values that cannot be cast become null (the caller compares validity). Naive
    timestamps are wall-clock time in ``timezone`` (UTC when unset)."""
    if arr.type == target:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    local = timezone not in (None, "UTC") and pa.types.is_timestamp(target)
    if local and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
        arr = pc.strftime(arr, "%Y-%m-%dT%H:%M:%S")  # naive instants from typed formats: read in the zone
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return _slow_parse(arr, target, timezone)


def cast_batch(
    table: pa.Table, schema: pa.Schema, rows: pa.Array, required: tuple[str, ...], timezone: str | None = None
) -> CastResult:
    """Cast ``table`` (every schema column present) to ``schema``.

    ``rows`` gives each row's position in the source file (reported in ``_row``); ``required`` columns
    (event time, entity keys) may not be null because partitioning and entities depend on them.
    """
    n = table.num_rows
    fail_any = np.zeros(n, dtype=bool)
    per_column: list[tuple[str, np.ndarray, str]] = []
    columns: list[pa.Array] = []
    for field in schema:
        raw = table.column(field.name).combine_chunks()
        cast = _cast_column(raw, field.type, timezone)
        columns.append(cast)
        if not cast.null_count:
            continue
        nulls = np.asarray(cast.is_null())
        failed = nulls & np.asarray(raw.is_valid())
        if failed.any():
            per_column.append((field.name, failed, f"{NOT_VALID}{LOGICAL_NAMES.get(field.type, field.type)}"))
            fail_any |= failed
        if field.name in required:
            missing = nulls & ~failed
            if missing.any():
                per_column.append((field.name, missing, MISSING))
                fail_any |= missing
    typed = pa.Table.from_arrays(columns, schema=schema)
    if not fail_any.any():
        return CastResult(typed, _empty_bad(schema))
    bad_idx = np.flatnonzero(fail_any)
    reasons = [[] for _ in bad_idx]
    pos = {int(i): k for k, i in enumerate(bad_idx)}
    for name, mask, why in per_column:
        raw = table.column(name)
        for i in np.flatnonzero(mask):
            value = raw[int(i)].as_py()
            reasons[pos[int(i)]].append(f"{name}: {value!r} {why}" if value is not None else f"{name}: {why}")
    bad = stringify(table.select(schema.names).take(pa.array(bad_idx)))
    bad = bad.append_column(ROW_COLUMN, pc.take(rows, pa.array(bad_idx)).cast(pa.int64()))
    bad = bad.append_column(REASON_COLUMN, pa.array(["; ".join(r) for r in reasons], pa.string()))
    good = typed.filter(pa.array(~fail_any))
    return CastResult(good, bad)


def reason_causes(reason: str, columns: Iterable[str]) -> list[str]:
    """The causes in one ``_reason``, short enough to count rows by: ``<column> missing`` (a required value),
    ``<column> not a valid <type>``, or what a record-level reject says first (``malformed CSV row``). Read
    here, where the text is written, so a report never mistakes a missing key for an unparsable value."""
    names = "|".join(re.escape(c) for c in sorted(columns, key=len, reverse=True)) or "(?!)"
    part = re.compile(
        rf"(?P<column>{names}): (?:(?P<missing>{re.escape(MISSING)})|.*?{re.escape(' ' + NOT_VALID)}(?P<type>.+?))"
        r"(?:; |$)"
    )
    causes, pos = [], 0
    while pos < len(reason):
        m = part.match(reason, pos)
        if m is None:  # a record-level reject: what it is comes before the first colon
            causes.append(reason[pos:].split(":", 1)[0])
            break
        causes.append(f"{m['column']} missing" if m["missing"] else f"{m['column']} not a valid {m['type']}")
        pos = m.end()
    return list(dict.fromkeys(causes))


def stringify(table: pa.Table) -> pa.Table:
    """Every column as strings: quarantined rows keep what the source said, whatever its type."""
    cols = [c if pa.types.is_string(c.type) else pc.cast(c, pa.string()) for c in table.columns]
    return pa.Table.from_arrays(cols, names=table.column_names)


def _empty_bad(schema: pa.Schema) -> pa.Table:
    return quarantine_schema(schema).empty_table()


def quarantine_schema(schema: pa.Schema) -> pa.Schema:
    """Quarantine layout: source columns as strings, then ``_row`` and ``_reason``."""
    fields = [pa.field(f.name, pa.string()) for f in schema]
    return pa.schema([*fields, pa.field(ROW_COLUMN, pa.int64()), pa.field(REASON_COLUMN, pa.string())])
