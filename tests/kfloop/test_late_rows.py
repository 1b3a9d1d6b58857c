"""Row classification by arrival: content hashes, side files compared by content only, the lateness cutoff."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.late_rows import LakeRows, SideRows
from kfloop.row_hash import row_hashes
from kfloop.storage import LocalStorage

SCHEMA = pa.schema([("id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("n", pa.int64())])


def table(ids: list[str], days: list[int], values: list[int | None]) -> pa.Table:
    times = [datetime(2026, 1, d, tzinfo=UTC) for d in days]
    return pa.table({"id": ids, "ts": times, "n": values}, schema=SCHEMA)


def put(storage: LocalStorage, key: str, rows: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(rows, buf)
    storage.write_bytes(key, buf.getvalue())


def test_row_hashes_depend_on_content_and_nulls_only() -> None:
    a, b = row_hashes(table(["x", "y"], [1, 2], [1, None])), row_hashes(table(["y", "x"], [2, 1], [None, 1]))
    assert sorted(a) == sorted(b) and len(set(a)) == 2
    assert len(row_hashes(table([], [], []))) == 0


def test_side_rows_compare_content_not_row_reason_or_source(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stored = pa.table(
        {"id": ["a", "b"], "_row": [2, 3], "_reason": ["x", "y"], "_raw": ["r1", "r2"], "_source": ["f"] * 2}
    )
    put(storage, "q/run1.parquet", stored)
    manifest = dataclasses.replace(lake.new_manifest("d", SCHEMA), runs=[{"quarantine": "q/run1.parquet"}, {}])
    again = pa.table(
        {"id": ["a", "c"], "_row": [9, 10], "_reason": ["z", "y"], "_raw": ["r1", "r3"], "_source": ["g"] * 2}
    )
    assert SideRows(storage, manifest, "quarantine").fresh(again).column("id").to_pylist() == ["c"]
    assert SideRows(storage, manifest, "too_late").fresh(again).num_rows == 2  # no side files of that kind


def test_split_by_watermark_lake_content_and_lateness(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    rows = table(["a", "b", "c"], [1, 5, 10], [1, 2, 3])
    writer = lake.PartitionWriter("d", SCHEMA, "ts", "run1", 1000)
    writer.add(rows)
    files = writer.store(storage)
    writer.close()
    manifest = lake.new_manifest("d", SCHEMA)
    manifest = dataclasses.replace(manifest, files=files)
    assert manifest.watermark is not None and manifest.watermark.startswith("2026-01-10")
    late = LakeRows(storage, manifest, SCHEMA, "ts", "3d")
    incoming = table(["a", "b2", "c", "d", "e"], [1, 2, 10, 8, 11], [1, 9, 3, 4, 5])
    split = late.split(incoming)
    assert split.keep.column("id").to_pylist() == ["e", "d"]  # after the watermark, then late within 3 days
    assert (split.late, split.skipped) == (1, 2)  # a and c are in the lake already
    assert split.too_late.column("id").to_pylist() == ["b2"]
    reasons = late.too_late_table(split.too_late, "src.csv").column("_reason").to_pylist()
    assert "minus source.allowed_lateness 3d" in reasons[0]
    first = LakeRows(storage, lake.new_manifest("d", SCHEMA), SCHEMA, "ts", "0s").split(incoming)
    assert (first.keep.num_rows, first.skipped, first.too_late.num_rows) == (5, 0, 0)  # an empty lake takes all
