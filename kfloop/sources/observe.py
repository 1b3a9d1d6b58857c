"""What columns a source file has, and their types where the format carries them (cheap: header only).

CSV and JSON Lines carry no reliable types, so their columns come back untyped (``None``); Parquet and
Avro report the logical type each column maps to, so a retyped column is caught before any row is read.
"""

from __future__ import annotations

import csv
from itertools import islice
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fastavro import reader as avro_reader

from kfloop.config import SourceConfig
from kfloop.errors import SourceError
from kfloop.sources.readers import text_encoding, utf8_line

#: Observed column → logical type (``None`` when the format does not say).
Observed = dict[str, str | None]


def logical_of_arrow(t: pa.DataType) -> str:
    """The logical type an Arrow type holds (``other:<type>`` for ones kfloop does not map)."""
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    return f"other:{t}"


_AVRO = {
    "int": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "boolean": "bool",
    "string": "string",
    "bytes": "other:bytes",
}


def _avro_logical(t: object) -> str | None:
    if isinstance(t, list):  # union: the non-null members must agree, else untyped
        kinds = {_avro_logical(m) for m in t if m != "null"}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(t, dict):
        if str(t.get("logicalType", "")).startswith(("timestamp", "date")):
            return "timestamp"
        return _avro_logical(t.get("type"))
    return _AVRO.get(str(t))


def observe(path: Path, fmt: str, cfg: SourceConfig, display: str) -> Observed:
    """Columns of the file in file order; a file that cannot be opened fails with its name."""
    try:
        if fmt == "csv":
            with open(path, newline="", encoding=text_encoding(cfg)) as fh:
                header = next(csv.reader(fh, delimiter=cfg.csv_delimiter), None)
            if header is None:
                raise SourceError(f"{display}: empty file (no CSV header)")
            return dict.fromkeys(header)
        if fmt == "parquet":
            return {f.name: logical_of_arrow(f.type) for f in pq.read_schema(path)}
        if fmt == "avro":
            with open(path, "rb") as fh:
                schema = avro_reader(fh).writer_schema or {}
            return {f["name"]: _avro_logical(f["type"]) for f in schema.get("fields", [])}
        seen: Observed = {}
        with open(path, "rb") as fh:
            for i, line in enumerate(islice(fh, 1000)):
                try:
                    rec = orjson.loads(utf8_line(line, text_encoding(cfg), first=i == 0))
                except orjson.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    seen.update(dict.fromkeys(k for k in rec if k not in seen))
        return seen
    except SourceError:
        raise
    except (OSError, ValueError, pa.ArrowInvalid, UnicodeDecodeError, EOFError) as err:
        raise SourceError(f"{display}: cannot read as {fmt}: {err}") from err
