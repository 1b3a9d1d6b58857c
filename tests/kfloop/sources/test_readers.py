"""kfloop.sources.readers: every format streams as raw batches that keep each row's file position and every
record that could not be parsed; a file that cannot be read fails with its name."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from kfloop.cast import cast_batch
from kfloop.errors import SourceError
from kfloop.schema import arrow_schema
from kfloop.sources import RawBatch, detect_format, iter_batches
from tests.kfloop.sources.files import COLUMNS, records, source_config, write

FORMATS = ["csv", "parquet", "jsonl", "avro"]
SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "avro": ".avro"}
FIRST_ROW = {"csv": 2, "jsonl": 1, "parquet": 1, "avro": 1}  # CSV line 1 is the header


def read_all(path: Path, **cfg: object) -> tuple[pa.Table, list[int], list]:
    batches: list[RawBatch] = list(iter_batches(path, source_config(**cfg), display=str(path)))  # type: ignore[arg-type]
    table = pa.concat_tables([b.table for b in batches]) if batches else None
    return table, [r for b in batches for r in b.rows.to_pylist()], [j for b in batches for j in b.rejects]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_streams_every_row_with_its_file_position(tmp_path: Path, fmt: str) -> None:
    src = write(tmp_path / f"tx{SUFFIX[fmt]}", records(2500), fmt)
    batches = list(iter_batches(src, source_config(batch_rows=1000)))
    table = pa.concat_tables([b.table for b in batches])

    assert table.column_names == list(COLUMNS)  # configured columns only, in config order; "extra" dropped
    assert table.num_rows == 2500 and not any(b.rejects for b in batches)
    n = [int(v) for v in table.column("n").to_pylist()]
    rows = [r for b in batches for r in b.rows.to_pylist()]
    assert n == list(range(2500))
    assert rows == [i + FIRST_ROW[fmt] for i in n]
    if fmt != "csv":  # CSV batches follow byte blocks; the others follow batch_rows
        assert len(batches) == 3 and max(b.table.num_rows for b in batches) == 1000
    # raw values (text, or the file's own types) cast back to exactly what was written
    cast = cast_batch(table, arrow_schema(source_config()), pa.array(rows), ())
    assert cast.bad.num_rows == 0
    assert cast.good.to_pylist() == [{k: r[k] for k in COLUMNS} for r in records(2500)]


def test_csv_malformed_rows_are_kept_as_rejects_with_their_line_and_text(tmp_path: Path) -> None:
    lines = ["card,ts,amount,n,ok"]
    for line in range(2, 3002):
        lines.append(
            f"c,2024-03-01,1.0,{line},true,TOO,MANY" if line in (5, 1700, 2999) else f"c,2024-03-01,1.0,{line},true"
        )
    src = tmp_path / "tx.csv"
    src.write_text("\n".join(lines) + "\n")

    table, rows, rejects = read_all(src)
    assert [(r.row, r.text) for r in rejects] == [
        (5, "c,2024-03-01,1.0,5,true,TOO,MANY"),
        (1700, "c,2024-03-01,1.0,1700,true,TOO,MANY"),
        (2999, "c,2024-03-01,1.0,2999,true,TOO,MANY"),
    ]
    assert all("expected 5 fields, got 7" in r.reason for r in rejects)
    # the rows around the rejects keep their true line numbers, across batch boundaries too
    assert rows == [int(v) for v in table.column("n").to_pylist()]
    assert len(rows) + len(rejects) == 3000


def test_csv_only_empty_and_null_mean_no_value(tmp_path: Path) -> None:
    src = tmp_path / "tx.csv"
    src.write_text("card;ts;amount;n;ok\n;2024-03-01;NULL;null;NA\nn/a;2024-03-01;-;0;false\n")
    table, rows, _ = read_all(src, delimiter=";")
    assert table.to_pylist() == [
        {"card": None, "ts": "2024-03-01", "amount": None, "n": None, "ok": "NA"},
        {"card": "n/a", "ts": "2024-03-01", "amount": "-", "n": "0", "ok": "false"},
    ]
    assert rows == [2, 3]


def test_jsonl_bad_lines_are_rejects_with_their_line_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "tx.jsonl"
    src.write_text(
        '{"card": "a", "ts": "2024-03-01", "amount": 1.5, "n": 1, "ok": true}\n'
        "\n"
        '{"card": "b", "ts": "2024-03-01", "amount": 2\n'
        '["not", "an", "object"]\n'
        '{"card": "c", "ts": "2024-03-01", "n": {"nested": [1]}, "ok": null}\n'
    )
    table, rows, rejects = read_all(src)
    assert rows == [1, 5]
    assert table.to_pylist() == [
        {"card": "a", "ts": "2024-03-01", "amount": "1.5", "n": "1", "ok": "true"},
        {"card": "c", "ts": "2024-03-01", "amount": None, "n": '{"nested":[1]}', "ok": None},  # missing key: null
    ]
    assert [(r.row, r.reason.split(":")[0]) for r in rejects] == [(3, "invalid JSON"), (4, "not a JSON object")]
    assert rejects[0].text == '{"card": "b", "ts": "2024-03-01", "amount": 2'


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_column_is_named_with_the_file(tmp_path: Path, fmt: str) -> None:
    rows = [{k: v for k, v in r.items() if k != "amount"} for r in records(3)]
    src = write(tmp_path / f"tx{SUFFIX[fmt]}", rows, fmt)
    with pytest.raises(SourceError, match=r"missing column.*amount") as err:
        read_all(src)
    assert str(src) in str(err.value)


@pytest.mark.parametrize("fmt", ["parquet", "avro", "csv"])
def test_a_file_that_is_not_what_it_claims_fails_naming_the_file(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"broken{SUFFIX[fmt]}"
    src.write_bytes(b"\xff\xfe\x00garbage\x00" * 10)
    with pytest.raises(SourceError, match=f"cannot read as {fmt}") as err:
        list(iter_batches(src, source_config(), display="https://example.test/broken"))
    assert str(err.value).startswith("https://example.test/broken: ")


def test_a_truncated_parquet_file_fails_naming_the_file(tmp_path: Path) -> None:
    src = write(tmp_path / "tx.parquet", records(100), "parquet")
    src.write_bytes(src.read_bytes()[:-50])
    with pytest.raises(SourceError, match=r"^s3://bkt/tx.parquet: cannot read as parquet"):
        list(iter_batches(src, source_config(), display="s3://bkt/tx.parquet"))


def test_the_format_comes_from_the_extension_unless_declared(tmp_path: Path) -> None:
    assert detect_format(Path("a/b.PARQUET"), "auto") == "parquet"
    assert detect_format(Path("a/b.ndjson"), "auto") == "jsonl"
    assert detect_format(Path("a/b.txt"), "csv") == "csv"
    with pytest.raises(SourceError, match=r"^s3://b/k.txt: cannot tell the format.*set source.format"):
        detect_format(Path("k.txt"), "auto", "s3://b/k.txt")
    # a declared format reads a file whatever its name
    src = write(tmp_path / "export.dat", records(3), "jsonl")
    assert read_all(src, fmt="jsonl")[0].num_rows == 3
    with pytest.raises(SourceError, match=r"export\.dat: cannot tell the format"):
        read_all(src)


@pytest.mark.parametrize("content", ["card,n\nc,1\n", ""], ids=["missing-column", "empty"])
def test_every_read_error_names_the_source_uri(tmp_path: Path, content: str) -> None:
    src = tmp_path / "tx.csv"
    src.write_text(content)
    with pytest.raises(SourceError, match=r"^s3://bkt/in/tx.csv: "):
        list(iter_batches(src, source_config(), display="s3://bkt/in/tx.csv"))
