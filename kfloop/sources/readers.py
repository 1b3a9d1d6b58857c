"""Stream a local source file as raw Arrow batches, memory bounded, whatever its format.

Each batch carries the file position of its rows (``_row``: the line number for CSV and JSON Lines,
header = line 1; the record number for Parquet and Avro) and the records that could not be parsed at
all, so nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastavro import reader as avro_reader

from kfloop.config import SourceConfig
from kfloop.errors import SourceError
from kfloop.formats import format_of

#: Only these CSV fields mean "no value"; anything else ("n/a", "NA", "-") is data, and is quarantined
#: with a reason if it does not parse as the column's type (pyarrow's default list is much wider), unless
#: ``source.null_values`` declares it: those tokens are nulls in the text values of every format.
CSV_NULLS = ("", "NULL", "null")


@dataclass(frozen=True)
class Reject:
    """A record that could not be parsed into columns."""

    row: int
    text: str
    reason: str


@dataclass
class RawBatch:
    """Source columns (raw types) for a run of rows, with their file positions."""

    table: pa.Table
    rows: pa.Array
    rejects: list[Reject] = field(default_factory=list)


def detect_format(path: Path, declared: str, display: str | None = None) -> str:
    """The declared format, or the one the file extension names."""
    if declared != "auto":
        return declared
    fmt = format_of(path)
    if fmt is None:
        raise SourceError(f"{display or path}: cannot tell the format from the extension; set source.format")
    return fmt


def _check_columns(name: str, found: list[str], cfg: SourceConfig) -> None:
    missing = [c for c in cfg.file_columns if c not in found]
    if missing:
        raise SourceError(f"{name}: missing column(s) {', '.join(missing)}; the file has: {', '.join(found) or 'none'}")


def iter_batches(path: Path, cfg: SourceConfig, display: str | None = None) -> Iterator[RawBatch]:
    """Yield raw batches of about ``cfg.batch_rows`` rows; a file that cannot be read fails with its name."""
    name = display or str(path)
    fmt = detect_format(path, cfg.format, name)
    readers = {"csv": _iter_csv, "parquet": _iter_parquet, "jsonl": _iter_jsonl, "avro": _iter_avro}
    try:
        for batch in readers[fmt](path, cfg, name):
            yield _null_tokens(batch, cfg.null_values)
    except SourceError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError, UnicodeDecodeError, EOFError) as err:
        raise SourceError(f"{name}: cannot read as {fmt}: {err}") from err


def _null_tokens(batch: RawBatch, tokens: tuple[str, ...]) -> RawBatch:
    """Declared null tokens (``NA``) as nulls in every text column, whatever the format, exactly matched."""
    if not tokens:
        return batch
    table = batch.table
    for i, col in enumerate(table.columns):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            hit = pc.fill_null(pc.is_in(col, value_set=pa.array(tokens, col.type)), False)
            table = table.set_column(i, table.field(i), pc.if_else(hit, pa.scalar(None, col.type), col))
    return RawBatch(table, batch.rows, batch.rejects)


def text_encoding(cfg: SourceConfig) -> str:
    """Python's name for the source encoding; UTF-8 as ``utf-8-sig`` so a byte-order mark is not read as text."""
    return "utf-8-sig" if codecs.lookup(cfg.encoding).name == "utf-8" else cfg.encoding


def _iter_csv(path: Path, cfg: SourceConfig, name: str) -> Iterator[RawBatch]:
    with open(path, newline="", encoding=text_encoding(cfg)) as fh:
        header = next(csv.reader(fh, delimiter=cfg.csv_delimiter), None)
    if header is None:
        raise SourceError(f"{name}: empty file (no CSV header)")
    _check_columns(name, header, cfg)
    bad_lines: list[int] = []
    rejects: list[Reject] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        line = int(row.number) if row.number is not None else -1
        bad_lines.append(line)
        reason = f"malformed CSV row: expected {row.expected_columns} fields, got {row.actual_columns}"
        rejects.append(Reject(line, row.text, reason))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            use_threads=False, block_size=max(1 << 16, cfg.batch_rows * 128), encoding=cfg.encoding
        ),  # Arrow skips a UTF-8 byte-order mark itself
        parse_options=pacsv.ParseOptions(delimiter=cfg.csv_delimiter, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in cfg.file_columns},
            include_columns=list(cfg.file_columns),
            strings_can_be_null=True,
            null_values=[*CSV_NULLS, *cfg.null_values],
        ),
    )
    next_line = 2
    for batch in reader:
        n = batch.num_rows
        pending = np.array(sorted(b for b in bad_lines if b >= next_line), dtype=np.int64)
        candidates = np.arange(next_line, next_line + n + len(pending), dtype=np.int64)
        lines = np.setdiff1d(candidates, pending, assume_unique=True)[:n]
        out = rejects.copy()
        rejects.clear()
        bad_lines[:] = [b for b in bad_lines if b > (lines[-1] if n else next_line)]
        next_line = int(lines[-1]) + 1 if n else next_line
        yield RawBatch(pa.Table.from_batches([batch]), pa.array(lines), out)
    if rejects:
        empty = pa.table({c: pa.array([], pa.string()) for c in cfg.file_columns})
        yield RawBatch(empty, pa.array([], pa.int64()), rejects)


def _iter_parquet(path: Path, cfg: SourceConfig, name: str) -> Iterator[RawBatch]:
    pf = pq.ParquetFile(path)
    _check_columns(name, pf.schema_arrow.names, cfg)
    start = 1
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=list(cfg.file_columns)):
        n = batch.num_rows
        yield RawBatch(pa.Table.from_batches([batch]), pa.array(np.arange(start, start + n, dtype=np.int64)))
        start += n


def records_to_batch(records: list[dict], rows: list[int], cfg: SourceConfig, rejects: list[Reject]) -> RawBatch:
    """Parsed records (JSON Lines, Avro, stream events) as the text columns every format is cast from."""
    cols = {}
    for c in cfg.file_columns:
        cols[c] = pa.array([_as_text(r.get(c)) for r in records], pa.string())
    return RawBatch(pa.table(cols), pa.array(rows, pa.int64()), rejects)


def _as_text(value: object) -> str | None:
    """Raw values as text, so one cast path (with per-row reasons) serves every format."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _iter_jsonl(path: Path, cfg: SourceConfig, name: str) -> Iterator[RawBatch]:
    records: list[dict] = []
    rows: list[int] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    checked = False
    encoding = text_encoding(cfg)
    with open(path, "rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            line = utf8_line(raw_line, encoding, first=line_no == 1)
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                rejects.append(Reject(line_no, line.decode("utf-8", "replace").rstrip("\n"), f"invalid JSON: {err}"))
                continue
            if not isinstance(rec, dict):
                rejects.append(Reject(line_no, line.decode("utf-8", "replace").rstrip("\n"), "not a JSON object"))
                continue
            records.append(rec)
            rows.append(line_no)
            if not checked:
                seen.update(rec)
            if len(records) >= cfg.batch_rows:
                if not checked:
                    _check_columns(name, sorted(seen), cfg)
                    checked = True
                yield records_to_batch(records, rows, cfg, rejects)
                records, rows, rejects = [], [], []
    if not checked and records:
        _check_columns(name, sorted(seen), cfg)
    if records or rejects:
        yield records_to_batch(records, rows, cfg, rejects)


def utf8_line(line: bytes, encoding: str, *, first: bool) -> bytes:
    """One JSON Lines line as UTF-8 for orjson: transcoded from ``encoding``, a leading BOM dropped."""
    if encoding == "utf-8-sig":
        return line.removeprefix(codecs.BOM_UTF8) if first else line
    return line.decode(encoding).encode("utf-8")


def _iter_avro(path: Path, cfg: SourceConfig, name: str) -> Iterator[RawBatch]:
    with open(path, "rb") as fh:
        rd = avro_reader(fh)
        fields = [f["name"] for f in (rd.writer_schema or {}).get("fields", [])]
        _check_columns(name, fields, cfg)
        records: list[dict] = []
        rows: list[int] = []
        for i, rec in enumerate(rd, start=1):
            records.append(rec)
            rows.append(i)
            if len(records) >= cfg.batch_rows:
                yield records_to_batch(records, rows, cfg, [])
                records, rows = [], []
        if records:
            yield records_to_batch(records, rows, cfg, [])
