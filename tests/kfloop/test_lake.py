"""kfloop.lake: the partitioned Parquet writer, the manifest that commits a dataset, and reading it back."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake, lake_commit
from kfloop.errors import StorageError
from kfloop.layout import manifest_key, part_key, part_run_id
from kfloop.schema import schema_hash
from kfloop.storage import LocalStorage, Storage

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([pa.field("ts", TS), pa.field("card", pa.string()), pa.field("amount", pa.float64())])
DAY = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "ws")
    return request.getfixturevalue("s3_storage")


def rows(times: list[datetime], first: int = 0) -> pa.Table:
    n = len(times)
    return pa.table(
        {
            "ts": pa.array(times, TS),
            "card": [f"c{first + i}" for i in range(n)],
            "amount": [float(first + i) for i in range(n)],
        },
        schema=SCHEMA,
    )


def write_and_commit(storage: Storage, dataset: str, run_id: str, *tables: pa.Table) -> lake.Manifest:
    """What ingest does: stage the partitions under the run id, then commit them through the manifest."""
    writer = lake.PartitionWriter(dataset, SCHEMA, "ts", run_id)
    try:
        with lake_commit.transaction(storage, dataset, run_id) as txn:
            for table in tables:
                writer.add(table)
            files = writer.store(storage)
            txn.stage(*(f.key for f in files))
            run = {"run_id": run_id, "rows": sum(f.rows for f in files)}
            return txn.commit(lambda cur: lake_commit.appended(cur, files, run), lake.new_manifest(dataset, SCHEMA))
    finally:
        writer.close()


def test_a_dataset_never_written_has_no_manifest_and_no_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert lake.read_manifest(storage, "never") is None
    assert lake.dataset_files(storage, "never") == []


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"dataset": "d", "schema": {}}),  # schema_hash and files missing
        json.dumps({"dataset": "d", "schema": {}, "schema_hash": "x", "files": [{"key": "k"}]}),  # file fields missing
        "[]",
    ],
    ids=["bad-json", "missing-keys", "bad-file-entry", "not-an-object"],
)
def test_a_corrupt_manifest_is_a_storage_error_naming_its_uri(tmp_path: Path, text: str) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_text(manifest_key("tx"), text)
    with pytest.raises(StorageError, match="corrupt manifest") as err:
        lake.read_manifest(storage, "tx")
    assert storage.uri(manifest_key("tx")) in str(err.value)
    with pytest.raises(StorageError, match="corrupt manifest"):
        lake.dataset_files(storage, "tx")


def test_the_writer_partitions_by_utc_event_date_and_describes_each_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    times = [
        DAY + timedelta(hours=23, minutes=59),  # late on the 1st, UTC
        DAY + timedelta(days=1),  # midnight starts the 2nd
        DAY + timedelta(hours=1),
        datetime(2024, 3, 3, 1, 30, tzinfo=UTC),
        DAY + timedelta(days=1, hours=5),
    ]
    writer = lake.PartitionWriter("tx", SCHEMA, "ts", "run-7")
    writer.add(rows(times))
    writer.add(rows([], first=99))  # an empty batch adds nothing
    files = writer.store(storage)
    writer.close()

    by_date = {f.event_date: f for f in files}
    assert sorted(by_date) == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert {d: f.rows for d, f in by_date.items()} == {"2024-03-01": 2, "2024-03-02": 2, "2024-03-03": 1}
    for n, f in enumerate(sorted(files, key=lambda f: f.key)):
        assert f.key == part_key("tx", f.event_date, "run-7", n)
        assert part_run_id(f.key) == "run-7" and f.run_id == "run-7"
        data = storage.read_bytes(f.key)
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.bytes == len(data)
        table = pq.read_table(storage.local_path(f.key))
        assert table.schema.equals(SCHEMA) and table.num_rows == f.rows
        stamps = table.column("ts").to_pylist()
        assert {t.date().isoformat() for t in stamps} == {f.event_date}
        assert f.min_event_time == min(stamps).isoformat() and f.max_event_time == max(stamps).isoformat()


def test_stored_files_are_invisible_until_the_manifest_commits_them(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = lake.PartitionWriter("tx", SCHEMA, "ts", "run-1")
    writer.add(rows([DAY]))
    files = writer.store(storage)
    writer.close()
    assert storage.exists(files[0].key)
    assert lake.read_manifest(storage, "tx") is None and lake.dataset_files(storage, "tx") == []


def test_the_writer_keeps_few_files_open_and_loses_no_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source spanning many dates, revisited batch after batch, never holds more than max_open files."""
    open_now, most = set(), 0

    class CountingWriter(pq.ParquetWriter):
        def __init__(self, where: object, *args: object, **kwargs: object) -> None:
            nonlocal most
            super().__init__(where, *args, **kwargs)
            open_now.add(id(self))
            most = max(most, len(open_now))

        def close(self) -> None:
            open_now.discard(id(self))
            super().close()

    monkeypatch.setattr(pq, "ParquetWriter", CountingWriter)
    storage = LocalStorage(tmp_path)
    writer = lake.PartitionWriter("tx", SCHEMA, "ts", "run", max_buffered_rows=40, max_open=4)
    for rnd in range(3):  # 40 dates, each visited in three batches
        writer.add(rows([DAY + timedelta(days=d, hours=rnd) for d in range(40)], first=rnd * 40))
    files = writer.store(storage)
    writer.close()

    assert 0 < most <= 4
    assert sum(f.rows for f in files) == 120 == sum(pq.read_metadata(storage.local_path(f.key)).num_rows for f in files)
    assert {f.event_date for f in files} == {(DAY + timedelta(days=d)).date().isoformat() for d in range(40)}
    assert len({f.key for f in files}) == len(files)  # a revisited date gets another part file, never overwrites


def test_a_committed_dataset_reads_back_every_row_with_its_manifest(storage: Storage) -> None:
    first = rows([DAY + timedelta(hours=h) for h in range(0, 72, 2)])  # 36 rows over 3 dates
    second = rows([DAY + timedelta(days=3, minutes=m) for m in range(5)], first=100)
    manifest = write_and_commit(storage, "tx", "run-a", first, second)

    read = lake.read_manifest(storage, "tx")
    assert read is not None
    assert read.rows == manifest.rows == 41
    assert read.schema == {"ts": "timestamp[us, tz=UTC]", "card": "string", "amount": "double"}
    assert read.schema_hash == schema_hash(SCHEMA)
    assert read.watermark == (DAY + timedelta(days=3, minutes=4)).isoformat()
    assert read.min_event_time == DAY.isoformat()
    assert read.content_hash == manifest.content_hash
    assert lake.dataset_files(storage, "tx") == [storage.uri(f.key) for f in read.files]

    batches = list(lake.iter_dataset(storage, read, batch_rows=10))
    assert all(b.num_rows < 20 for b in batches)  # about batch_rows each: memory stays bounded
    back = pa.concat_tables(batches).sort_by("card")
    assert back.equals(pa.concat_tables([first, second]).sort_by("card"))

    only = pa.concat_tables(lake.iter_dataset(storage, read, batch_rows=1000, columns=["amount", "card"]))
    assert only.column_names == ["amount", "card"] and only.num_rows == 41


def test_the_manifest_json_carries_what_the_next_stage_and_lineage_read(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    manifest = write_and_commit(storage, "tx", "run-a", rows([DAY, DAY + timedelta(days=1)]))
    body = json.loads(storage.read_text(manifest_key("tx")))
    assert body["rows"] == 2
    assert body["schema_hash"] == schema_hash(SCHEMA)
    assert body["content_hash"] == manifest.content_hash
    assert body["watermark"] == body["max_event_time"] == (DAY + timedelta(days=1)).isoformat()
    assert body["min_event_time"] == DAY.isoformat()
    assert [f["key"] for f in body["files"]] == [f.key for f in manifest.files]
    assert lake.Manifest.from_json(manifest.to_json()) == manifest


def test_the_content_hash_changes_with_the_data_not_with_file_order() -> None:
    def data_file(key: str, sha: str) -> lake.DataFile:
        return lake.DataFile(key, 1, 10, sha, "2024-03-01", "r", "2024-03-01T00:00:00", "2024-03-01T00:00:00")

    a, b = data_file("k1", "aa"), data_file("k2", "bb")
    m = lake.new_manifest("tx", SCHEMA)
    one = lake.Manifest(m.dataset, m.schema, m.schema_hash, files=[a, b])
    assert one.content_hash == lake.Manifest(m.dataset, m.schema, m.schema_hash, files=[b, a]).content_hash
    changed = lake.Manifest(m.dataset, m.schema, m.schema_hash, files=[a, data_file("k2", "cc")])
    assert changed.content_hash != one.content_hash
    assert lake.new_manifest("tx", SCHEMA).watermark is None and lake.new_manifest("tx", SCHEMA).rows == 0


def test_reading_a_dataset_whose_committed_file_vanished_fails(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    manifest = write_and_commit(storage, "tx", "run-a", rows([DAY]))
    storage.delete(manifest.files[0].key)
    with pytest.raises((OSError, StorageError)) as err:
        list(lake.iter_dataset(storage, manifest, batch_rows=100))
    assert manifest.files[0].key in str(err.value)  # the reader learns which file is gone
