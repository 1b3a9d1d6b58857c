"""Cast a raw batch and add the derived columns: the typed rows of the lake schema, failures quarantined.

Derived columns are computed after the cast, in declaration order, on the rows that cast cleanly; a row
whose expression fails (or whose required derived value is missing) leaves with a reason naming the
column, exactly like a cast failure, so the quarantine has one layout and the lake one schema.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.cast import MISSING, NOT_VALID, REASON_COLUMN, ROW_COLUMN, CastResult, cast_batch, stringify
from kfloop.config import SourceConfig
from kfloop.expressions import evaluate
from kfloop.schema import ARROW_TYPES, arrow_schema
from kfloop.timezones import GAP, parse_timestamps


def cast_and_derive(table: pa.Table, source: SourceConfig, rows: pa.Array, required: tuple[str, ...]) -> CastResult:
    """Cast the file's columns of ``table``, then compute ``source.derived`` on the good rows."""
    schema = arrow_schema(source)
    if not source.derived:
        cast = cast_batch(table, schema, rows, required, source.timezone)
        return CastResult(cast.good, _explain_gaps(cast.bad, schema, source.timezone))
    file_schema = pa.schema([schema.field(c) for c in source.file_columns])
    cast = cast_batch(table, file_schema, rows, tuple(r for r in required if r in file_schema.names), source.timezone)
    good = cast.good
    good_rows = pc.filter(rows, pc.invert(pc.is_in(rows, value_set=cast.bad.column(ROW_COLUMN).combine_chunks())))
    n = good.num_rows
    fail = np.zeros(n, dtype=bool)
    reasons: dict[int, list[str]] = {}  # failing rows only: batches stay vectorized
    types = dict(source.file_columns)
    for name, col in source.derived.items():
        values, failures = evaluate(col.expression, good, types, source.timezone)
        values = pc.cast(values, ARROW_TYPES[col.type])
        failed = np.zeros(n, dtype=bool)
        for mask, text, why in failures.parts:
            for i in np.flatnonzero(mask):
                reasons.setdefault(int(i), []).append(f"{name}: {text[int(i)].as_py()!r} {why}")
            failed |= mask
        if name in required:  # unless the row already failed: its missing value would only repeat that
            for i in np.flatnonzero(np.asarray(values.is_null()) & ~failed & ~fail):
                reasons.setdefault(int(i), []).append(f"{name}: {MISSING}")
                failed[i] = True
        fail |= failed
        good = good.append_column(pa.field(name, values.type), values)
        types[name] = col.type
    bad = _explain_gaps(_widen(cast.bad, schema), schema, source.timezone)
    if fail.any():
        idx = pa.array(np.flatnonzero(fail))
        derived_bad = stringify(good.take(idx))
        derived_bad = derived_bad.append_column(ROW_COLUMN, pc.take(good_rows, idx).cast(pa.int64()))
        texts = ["; ".join(reasons[int(i)]) for i in np.flatnonzero(fail)]
        derived_bad = derived_bad.append_column(REASON_COLUMN, pa.array(texts, pa.string()))
        bad = pa.concat_tables([bad, derived_bad.cast(bad.schema)])
        good = good.filter(pa.array(~fail))
    return CastResult(good.select(schema.names).cast(schema), bad)


def _widen(bad: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast failures in the full quarantine layout: derived columns (never computed) are null."""
    cols = [bad.column(f.name) if f.name in bad.column_names else pa.nulls(bad.num_rows, pa.string()) for f in schema]
    table = pa.Table.from_arrays(cols, names=schema.names)
    return table.append_column(ROW_COLUMN, bad.column(ROW_COLUMN)).append_column(
        REASON_COLUMN, bad.column(REASON_COLUMN)
    )


def _explain_gaps(bad: pa.Table, schema: pa.Schema, zone: str | None) -> pa.Table:
    """Say why a naive timestamp that looks valid failed: the clock skipped it in ``zone`` (spring forward)."""
    if zone in (None, "UTC") or not bad.num_rows:
        return bad
    reasons = bad.column(REASON_COLUMN).to_pylist()
    changed = False
    for f in schema:
        if not pa.types.is_timestamp(f.type):
            continue
        text = bad.column(f.name).combine_chunks()
        _, gap = parse_timestamps(text, f.type, zone)
        for i in np.flatnonzero(gap):
            plain = f"{f.name}: {text[int(i)].as_py()!r} {NOT_VALID}timestamp"
            reasons[i] = reasons[i].replace(plain, f"{plain} ({GAP}{zone})", 1)
            changed = True
    if not changed:
        return bad
    return bad.set_column(bad.schema.get_field_index(REASON_COLUMN), REASON_COLUMN, pa.array(reasons, pa.string()))
