"""Reference profile of a model version's training data: what the drift check compares a window against.

Built once per model version and stored with it, so a drift check never re-reads or re-sorts the training
set. Each numeric column keeps its non-null values sorted ascending (float64): exactly what Evidently's
K-S, normed Wasserstein and Sturges-binned Jensen-Shannon need, so :mod:`kfloop.monitoring.drift` can
reproduce Evidently's scores to rounding. Each categorical column keeps its category counts.

Nulls follow Evidently (``replace([-inf, inf], nan).dropna()`` before every test): NaN, None, pd.NA and,
for numeric columns, ±inf are counted in ``nulls`` and left out of ``values``/``categories``.

Categories are keyed by text so that the profile is one typed file. :func:`category_key` maps a value to
its key; integral floats map like the integer (``1.0`` → ``"1"``), because Evidently's dict-based counts
merge ``1`` and ``1.0`` as well.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

#: Arrow schema-metadata key and value naming this file format (bump the version on any layout change).
FORMAT_KEY = b"kfloop.monitoring.profile"
FORMAT_VERSION = "1"

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the reference. ``values`` (numeric) is read-only, sorted, finite float64."""

    name: str
    kind: Kind
    rows: int  # reference rows (nulls included)
    nulls: int
    values: np.ndarray | None  # numeric: the non-null values, sorted ascending, float64
    categories: dict[str, int] | None  # categorical: non-null value as text -> count

    @property
    def count(self) -> int:
        """Non-null reference values: the reference size Evidently's test choice looks at."""
        return self.rows - self.nulls

    @cached_property
    def ecdf(self) -> tuple[np.ndarray, np.ndarray]:
        """Numeric: distinct values and the count of values ≤ each; computed once, then reused by every check."""
        values = self.values if self.values is not None else np.empty(0, np.float64)
        if values.size == 0:
            return values, np.empty(0, np.int64)
        ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
        return _readonly(values[ends]), _readonly(ends + 1)

    @cached_property
    def std(self) -> float:
        """Numeric: population standard deviation of the values (what Evidently norms Wasserstein by)."""
        return float(np.std(self.values)) if self.values is not None and self.values.size else 0.0


@dataclass(frozen=True)
class ReferenceProfile:
    """Every monitored column (features and prediction) of one model version's reference data."""

    columns: dict[str, ColumnProfile]
    rows: int


def category_key(value: Any) -> str:
    """Text key of a category value; integral floats as the integer, so 1 and 1.0 count together."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def category_counts(values: pd.Series | np.ndarray) -> dict[str, int]:
    """Non-null value counts keyed by :func:`category_key` (±inf dropped like NaN, as Evidently does)."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories))
        pairs: Iterable[tuple[Any, int]] = zip(series.cat.categories, counts.tolist(), strict=True)
    else:
        pairs = series.value_counts(dropna=True, sort=False).items()
    out: dict[str, int] = {}
    for value, n in pairs:
        if n == 0 or (isinstance(value, float | np.floating) and np.isinf(value)):
            continue
        key = category_key(value)
        out[key] = out.get(key, 0) + int(n)
    return out


def finite_values(values: pd.Series | np.ndarray, name: str = "") -> np.ndarray:
    """The finite values of a numeric column as float64 (no copy when already clean float64)."""
    if isinstance(values, pd.Series):
        if not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)):
            raise ValueError(f"Column '{name or values.name}' should contain numerical values only.")
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = np.asarray(values, dtype=np.float64)
    arr = arr.ravel()
    finite = np.isfinite(arr)
    return arr if finite.all() else arr[finite]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def profile_column(values: pd.Series | np.ndarray, name: str, kind: Kind) -> ColumnProfile:
    """Profile one reference column (sorts numeric values once: the only O(n log n) step)."""
    rows = len(values)
    if kind == "numeric":
        sorted_values = np.sort(finite_values(values, name))  # a copy: never aliases the caller's frame
        return ColumnProfile(name, kind, rows, rows - sorted_values.size, _readonly(sorted_values), None)
    if kind == "categorical":
        counts = category_counts(values)
        return ColumnProfile(name, kind, rows, rows - sum(counts.values()), None, counts)
    raise ValueError(f"unknown column kind {kind!r} for {name!r}: expected 'numeric' or 'categorical'")


def build_profile(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> ReferenceProfile:
    """Profile the monitored columns of the reference (training) frame."""
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"columns both numeric and categorical: {sorted(overlap)}")
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the reference frame: {missing}")
    columns: dict[str, ColumnProfile] = {}
    for name in numeric:
        columns[name] = profile_column(frame[name], name, "numeric")
    for name in categorical:
        columns[name] = profile_column(frame[name], name, "categorical")
    return ReferenceProfile(columns, len(frame))


# --- one self-describing file: Arrow IPC, one row per column ----------------------------------------

_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("nulls", pa.int64(), nullable=False),
        pa.field("values", pa.large_list(pa.float64())),  # numeric only
        pa.field("category", pa.list_(pa.string())),  # categorical only
        pa.field("count", pa.list_(pa.int64())),  # categorical only, aligned with "category"
    ]
)


def profile_to_bytes(profile: ReferenceProfile) -> bytes:
    """Serialize to one Arrow IPC file (schema metadata names the format; zstd-compressed buffers)."""
    cols = list(profile.columns.values())
    values = pa.LargeListArray.from_arrays(
        pa.array(np.cumsum([0] + [0 if c.values is None else c.values.size for c in cols]), pa.int64()),
        pa.array(np.concatenate([c.values for c in cols if c.values is not None] or [np.empty(0)])),
        mask=pa.array([c.values is None for c in cols], pa.bool_()),
    )
    table = pa.table(
        {
            "name": [c.name for c in cols],
            "kind": [c.kind for c in cols],
            "rows": [c.rows for c in cols],
            "nulls": [c.nulls for c in cols],
            "values": values,
            "category": [None if c.categories is None else list(c.categories) for c in cols],
            "count": [None if c.categories is None else list(c.categories.values()) for c in cols],
        },
        schema=_SCHEMA.with_metadata({FORMAT_KEY: FORMAT_VERSION.encode(), b"rows": json.dumps(profile.rows).encode()}),
    )
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def profile_from_bytes(data: bytes) -> ReferenceProfile:
    """Read a profile written by :func:`profile_to_bytes` (refuses other files and format versions)."""
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    meta = table.schema.metadata or {}
    version = meta.get(FORMAT_KEY)
    if version != FORMAT_VERSION.encode():
        raise ValueError(f"not a kfloop reference profile (format {version!r}, expected {FORMAT_VERSION!r})")
    table = table.combine_chunks()
    names = table.column("name").to_pylist()
    kinds = table.column("kind").to_pylist()
    rows = table.column("rows").to_pylist()
    nulls = table.column("nulls").to_pylist()
    values = table.column("values").chunk(0) if table.num_rows else None
    category = table.column("category").to_pylist()
    count = table.column("count").to_pylist()
    columns: dict[str, ColumnProfile] = {}
    for i, name in enumerate(names):
        if kinds[i] == "numeric":
            arr = values[i].values.to_numpy(zero_copy_only=False)  # type: ignore[index]  # a view: no copy
            col = ColumnProfile(name, "numeric", rows[i], nulls[i], _readonly(arr.astype(np.float64, copy=False)), None)
        else:
            col = ColumnProfile(
                name, "categorical", rows[i], nulls[i], None, dict(zip(category[i], count[i], strict=True))
            )
        columns[name] = col
    return ReferenceProfile(columns, int(json.loads(meta[b"rows"])))
