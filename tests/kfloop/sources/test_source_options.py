"""Source options: null tokens in every format, the text encoding, a UTF-8 byte-order mark."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop.config import SourceConfig
from kfloop.sources import iter_batches
from kfloop.sources.observe import observe

COLUMNS = {"card": "string", "ts": "timestamp", "amount": "float64"}


def config(**extra: object) -> SourceConfig:
    data = {"uri": "unused", "entity_keys": ["card"], "timestamp_column": "ts", "columns": COLUMNS}
    return SourceConfig.model_validate_json(json.dumps(data | extra))


def read(path: Path, cfg: SourceConfig) -> pa.Table:
    return pa.concat_tables([b.table for b in iter_batches(path, cfg, display=path.name)])


def write(path: Path, fmt: str, rows: list[dict]) -> Path:
    if fmt == "csv":
        lines = ["card,ts,amount", *(f"{r['card']},{r['ts']},{r['amount']}" for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_declared_null_tokens_are_nulls_in_every_format(tmp_path: Path, fmt: str) -> None:
    rows = [{"card": "c1", "ts": "2024-01-01T00:00:00Z", "amount": "NA"}, {"card": "NA", "ts": "NA", "amount": "1.5"}]
    path = write(tmp_path / f"s.{fmt}", fmt, rows)
    plain = read(path, config())
    assert plain.column("amount").to_pylist() == ["NA", "1.5"]  # undeclared: data (quarantined later as a bad float)
    table = read(path, config(null_values=["NA"]))
    assert table.column("amount").to_pylist() == [None, "1.5"]
    assert table.column("card").to_pylist() == ["c1", None]
    assert table.column("ts").to_pylist() == ["2024-01-01T00:00:00Z", None]


def test_null_tokens_match_exactly(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", "jsonl", [{"card": "NAN", "ts": " NA", "amount": "na"}])
    table = read(path, config(null_values=["NA"]))
    assert table.to_pylist() == [{"card": "NAN", "ts": " NA", "amount": "na"}]


def test_utf8_bom_does_not_corrupt_the_first_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfcard,ts,amount\nc1,2024-01-01T00:00:00Z,2\n")
    cfg = config()
    assert list(observe(path, "csv", cfg, path.name)) == ["card", "ts", "amount"]
    assert read(path, cfg).to_pylist() == [{"card": "c1", "ts": "2024-01-01T00:00:00Z", "amount": "2"}]


def test_utf8_bom_in_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"card": "c1", "ts": "2024-01-01T00:00:00Z", "amount": 2}\n')
    batches = list(iter_batches(path, config(), display=path.name))
    assert not any(b.rejects for b in batches)
    assert list(observe(path, "jsonl", config(), path.name)) == ["card", "ts", "amount"]
    assert batches[0].table.column("card").to_pylist() == ["c1"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_declared_encoding_is_decoded(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"latin.{fmt}"
    if fmt == "csv":
        path.write_bytes("card,ts,amount\nJosé,2024-01-01T00:00:00Z,2\n".encode("latin-1"))
    else:
        path.write_bytes('{"card": "José", "ts": "2024-01-01T00:00:00Z", "amount": 2}\n'.encode("latin-1"))
    assert read(path, config(encoding="latin-1")).column("card").to_pylist() == ["José"]
