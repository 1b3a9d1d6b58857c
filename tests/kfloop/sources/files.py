"""Small source files in every format, written with the formats' own libraries, for the source tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from kfloop.config import SourceConfig

START = datetime(2024, 3, 1, tzinfo=UTC)
#: The columns every test source declares; files may carry more, which readers must drop.
COLUMNS = {"card": "string", "ts": "timestamp", "amount": "float64", "n": "int64", "ok": "bool"}


def source_config(fmt: str = "auto", batch_rows: int = 1000, delimiter: str = ",") -> SourceConfig:
    data = {
        "uri": "unused",
        "format": fmt,
        "entity_keys": ["card"],
        "timestamp_column": "ts",
        "columns": COLUMNS,
        "batch_rows": batch_rows,
        "csv_delimiter": delimiter,
    }
    return SourceConfig.model_validate_json(json.dumps(data))  # as a config file is read


def records(n: int) -> list[dict]:
    """Row i has n == i, so a test can tell which source row a read value came from."""
    return [
        {
            "card": f"c{i % 7}",
            "ts": START + timedelta(minutes=i),
            "amount": i / 4,
            "n": i,
            "ok": i % 2 == 0,
            "extra": "dropped",
        }
        for i in range(n)
    ]


AVRO_SCHEMA = {
    "type": "record",
    "name": "tx",
    "fields": [
        {"name": "card", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "amount", "type": ["null", "double"]},
        {"name": "n", "type": "long"},
        {"name": "ok", "type": "boolean"},
        {"name": "extra", "type": "string"},
    ],
}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value.isoformat() if isinstance(value, datetime) else str(value)


def write(path: Path, rows: list[dict], fmt: str) -> Path:
    """``rows`` (all with the keys of the first) in ``fmt`` at ``path``, the way other tools would write them."""
    names = list(rows[0])
    if fmt == "csv":
        lines = [",".join(names), *(",".join(_text(r[k]) for k in names) for r in rows)]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        path.write_text(
            "".join(
                json.dumps({k: _text(v) if isinstance(v, datetime) else v for k, v in r.items()}) + "\n" for r in rows
            )
        )
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "avro":
        schema = {**AVRO_SCHEMA, "fields": [f for f in AVRO_SCHEMA["fields"] if f["name"] in names]}
        with open(path, "wb") as fh:
            fastavro.writer(fh, schema, rows)
    else:
        raise ValueError(fmt)
    return path
