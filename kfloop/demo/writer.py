"""Write a demo frame as CSV, Parquet, JSON Lines or Avro, atomically.

Why: the loop ingests any of these formats; writing to a temporary sibling and ``os.replace`` means a
reader never sees a half-written file, even if generation is interrupted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO, Any

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kfloop.files import atomic_write
from kfloop.formats import FORMAT_BY_SUFFIX, FORMATS, FileFormat, format_of

_AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_from_path(path: str | Path) -> FileFormat:
    """Pick the file format from the suffix (the same suffixes ingestion reads, ``kfloop.formats``)."""
    fmt = format_of(path)
    if fmt is None:
        suffix = Path(path).suffix.lower()
        raise ValueError(
            f"{path}: cannot tell the format from suffix {suffix!r} (known: {', '.join(FORMAT_BY_SUFFIX)})"
        )
    return fmt


def write_frame(frame: pd.DataFrame, path: Path, fmt: FileFormat) -> None:
    """Write ``frame`` to ``path`` in ``fmt``; the file appears complete or not at all."""
    writers = {"csv": _write_csv, "parquet": _write_parquet, "jsonl": _write_jsonl, "avro": _write_avro}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    atomic_write(Path(path), lambda fh: writers[fmt](frame, fh))


def _is_timestamp(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M"


def _utc_micros(series: pd.Series) -> np.ndarray:
    """Naive UTC datetime64[us] values; tz-naive timestamps are taken to be UTC already."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy().astype("datetime64[us]")


def _iso(series: pd.Series) -> np.ndarray:
    """ISO-8601 with microseconds and offset, e.g. 2026-01-01T00:03:12.123456+00:00; nulls → None."""
    text = np.datetime_as_string(_utc_micros(series), unit="us").astype(object) + "+00:00"
    text[series.isna().to_numpy()] = None
    return text


def _text_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy(deep=False)
    for name in out.columns:
        if _is_timestamp(out[name]):
            out[name] = _iso(out[name])
    return out


def _write_csv(frame: pd.DataFrame, fh: IO[bytes]) -> None:
    _text_timestamps(frame).to_csv(fh, index=False, lineterminator="\n", encoding="utf-8")


def _python_values(series: pd.Series) -> list[Any]:
    """Column as plain Python values, nulls as None (JSON and Avro reject NaN as a null)."""
    out = series.to_numpy().tolist()
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) != "string":
        out = [v.item() if isinstance(v, np.generic) else v for v in out]
    for i in np.flatnonzero(series.isna().to_numpy()):
        out[i] = None
    return out


def _write_jsonl(frame: pd.DataFrame, fh: IO[bytes]) -> None:
    text = _text_timestamps(frame)
    columns = [_python_values(text[name]) for name in text.columns]
    names = [str(name) for name in text.columns]
    for start in range(0, len(text), 50_000):
        chunk = zip(*(c[start : start + 50_000] for c in columns), strict=True)
        lines = "".join(json.dumps(dict(zip(names, row, strict=True))) + "\n" for row in chunk)
        fh.write(lines.encode("utf-8"))


def _stringify_mixed(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: object columns mixing numbers and text become text."""
    out = frame.copy(deep=False)
    for name in out.columns:
        if out[name].dtype == object:
            kind = pd.api.types.infer_dtype(out[name], skipna=True)
            if kind in ("floating", "integer", "mixed-integer-float"):
                out[name] = pd.to_numeric(out[name])
            elif kind.startswith("mixed"):
                out[name] = out[name].map(lambda v: None if pd.isna(v) else str(v))
    return out


def _write_parquet(frame: pd.DataFrame, fh: IO[bytes]) -> None:
    table = pa.Table.from_pandas(_stringify_mixed(frame), preserve_index=False)
    pq.write_table(table, fh)


_AVRO_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}


def _python_type(t: type) -> type:
    for base, python in ((bool | np.bool_, bool), (str, str), (int | np.integer, int), (float | np.floating, float)):
        if issubclass(t, base):
            return python
    return t


def _avro_field(name: str, series: pd.Series) -> dict[str, Any]:
    """Avro type for one column, a union when defects mix text into numbers or add nulls."""
    if _is_timestamp(series):
        types: list[Any] = [{"type": "long", "logicalType": "timestamp-micros"}]
    elif series.dtype.kind == "b":
        types = ["boolean"]
    elif series.dtype.kind in "iu":
        types = ["long"]
    elif series.dtype.kind == "f":
        types = ["double"]
    elif pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        types = ["string"]
    else:
        present = {_python_type(type(v)) for v in series.dropna()}
        unknown = [t.__name__ for t in present if t not in _AVRO_TYPES]
        if unknown:
            raise ValueError(f"column {name!r}: cannot write values of type {', '.join(unknown)} to Avro")
        types = [_AVRO_TYPES[t] for t in _AVRO_TYPES if t in present] or ["string"]
    if series.isna().any():
        types = ["null", *types]
    return {"name": name, "type": types[0] if len(types) == 1 else types}


def avro_schema(frame: pd.DataFrame, name: str = "Record") -> dict[str, Any]:
    """The Avro record schema :func:`write_frame` derives from ``frame``."""
    bad = [str(c) for c in frame.columns if not _AVRO_NAME.match(str(c))]
    if bad:
        raise ValueError(f"column names {bad} are not valid Avro names")
    return {"type": "record", "name": name, "fields": [_avro_field(str(c), frame[c]) for c in frame.columns]}


def _write_avro(frame: pd.DataFrame, fh: IO[bytes]) -> None:
    schema = fastavro.parse_schema(avro_schema(frame))
    columns = []
    for name in frame.columns:
        series = frame[name]
        if _is_timestamp(series):  # fastavro takes timestamp-micros as epoch microseconds
            values = _utc_micros(series).astype(np.int64).astype(object)
            values[series.isna().to_numpy()] = None
            columns.append(values.tolist())
        else:
            columns.append(_python_values(series))
    names = [str(name) for name in frame.columns]
    records = (dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True))
    fastavro.writer(fh, schema, records, codec="deflate")
