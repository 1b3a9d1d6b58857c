"""kfloop.sources.observe: a file's columns (and their types where the format carries them) from its header,
so a schema change is caught before any row is read."""

from __future__ import annotations

from pathlib import Path

import fastavro
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop.errors import SourceError
from kfloop.sources.observe import observe
from tests.kfloop.sources.files import records, source_config, write

CFG = source_config()
IN_FILE_ORDER = ["card", "ts", "amount", "n", "ok", "extra"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_formats_report_columns_in_file_order_untyped(tmp_path: Path, fmt: str) -> None:
    src = write(tmp_path / f"tx.{fmt}", records(3), fmt)
    assert observe(src, fmt, CFG, "tx") == dict.fromkeys(IN_FILE_ORDER)


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_typed_formats_report_the_logical_type_of_each_column(tmp_path: Path, fmt: str) -> None:
    src = write(tmp_path / f"tx.{fmt}", records(3), fmt)
    observed = observe(src, fmt, CFG, "tx")
    assert list(observed) == IN_FILE_ORDER
    assert observed == {
        "card": "string",
        "ts": "timestamp",
        "amount": "float64",  # a nullable ["null", "double"] in the Avro file
        "n": "int64",
        "ok": "bool",
        "extra": "string",
    }


def test_parquet_types_map_to_logical_types_and_unknown_ones_are_named(tmp_path: Path) -> None:
    table = pa.table(
        {
            "i32": pa.array([1], pa.int32()),
            "f32": pa.array([1.0], pa.float32()),
            "cat": pa.Array.from_pandas(pd.Categorical(["a"])),  # a pandas categorical
            "day": pa.array([0], pa.date32()),
            "tags": pa.array([["x"]], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    assert observe(tmp_path / "t.parquet", "parquet", CFG, "t") == {
        "i32": "int64",
        "f32": "float64",
        "cat": "string",
        "day": "timestamp",
        "tags": "other:list<element: string>",  # a retyped column is reported as what it is
    }


def test_an_avro_union_of_different_types_is_untyped(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "r",
        "fields": [
            {"name": "either", "type": ["null", "long", "string"]},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
    with open(tmp_path / "t.avro", "wb") as fh:
        fastavro.writer(fh, schema, [{"either": 1, "day": 19000}])
    assert observe(tmp_path / "t.avro", "avro", CFG, "t") == {"either": None, "day": "timestamp"}


def test_jsonl_keys_are_gathered_over_lines_skipping_bad_ones(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text('{"a": 1}\nnot json\n[1, 2]\n{"b": 2, "a": 3}\n')
    assert observe(src, "jsonl", CFG, "t") == {"a": None, "b": None}


@pytest.mark.parametrize("fmt", ["parquet", "avro", "csv"])
def test_a_file_that_cannot_be_opened_fails_naming_it(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"broken.{fmt}"
    src.write_bytes(b"\xff\xfe\x00not a real file\x00" * 4)
    with pytest.raises(SourceError, match=rf"^s3://bkt/broken\.{fmt}: cannot read as {fmt}"):
        observe(src, fmt, CFG, f"s3://bkt/broken.{fmt}")


def test_an_empty_csv_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(SourceError, match=r"^http://h/e\.csv: empty file \(no CSV header\)"):
        observe(tmp_path / "e.csv", "csv", CFG, "http://h/e.csv")
