"""Retention and an ingest that commits while retention is rewriting: the ingest's commit survives (its new rows
stay, its rows already past the period go), because retention merges into the manifest it re-reads under the
dataset's lease. The overlap is forced with the real lease: the test holds it, lets retention stage its rewrite
and wait, commits the "ingest" as the lease holder, then lets retention commit."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake, lake_commit, layout
from kfloop.retention.lake_trim import trim
from kfloop.storage import LocalStorage
from kfloop.storage.lease import lease

DAY = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp("us", tz="UTC"))])


def _stored(storage: LocalStorage, run_id: str, hours: list[int]) -> tuple[list[lake.DataFile], dict]:
    table = pa.table({"id": hours, "ts": [DAY + timedelta(hours=h) for h in hours]}, schema=SCHEMA)
    writer = lake.PartitionWriter("ds", SCHEMA, "ts", run_id)
    try:
        writer.add(table)
        return writer.store(storage), {"run_id": run_id}
    finally:
        writer.close()


def _ids(storage: LocalStorage) -> list[int]:
    manifest = lake.read_manifest(storage, "ds")
    return sorted(i for f in manifest.files for i in pq.read_table(storage.local_path(f.key))["id"].to_pylist())


def test_an_ingest_committed_during_retention_keeps_its_new_rows(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    files, run = _stored(storage, "20260301T000000Z-aaaaaa", [10, 30, 42, 58])  # day 1, day 2 (x2), day 3
    with lake_commit.transaction(storage, "ds", run["run_id"]) as txn:
        txn.stage(*(f.key for f in files))
        txn.commit(lambda cur: lake_commit.appended(cur, files, run), lake.new_manifest("ds", SCHEMA))
    cutoff = DAY + timedelta(hours=36)  # day 2, 12:00: hour 30 goes, 42 stays (their file is rewritten)
    outcome: dict = {}
    with lease(storage, layout.lake_lock_key("ds"), name="test ingest", owner="ingest-b") as held:
        worker = threading.Thread(
            target=lambda: outcome.update(t=trim(storage, "ds", "ts", cutoff, "20260305T000000Z-retain"))
        )
        worker.start()
        deadline = time.monotonic() + 30
        while not any("retain" in k for k in storage.list(layout.data_prefix("ds") + "/")):
            assert time.monotonic() < deadline, "retention never staged its rewrite"
            time.sleep(0.02)
        time.sleep(0.3)  # it now waits for the lease the test holds
        assert worker.is_alive()
        late, run_b = _stored(storage, "20260305T000000Z-ingest", [11, 80])  # an old late row, and a new one
        current = lake.read_manifest(storage, "ds")
        held.check()
        storage.write_text(layout.manifest_key("ds"), lake_commit.appended(current, late, run_b).to_json())
    worker.join(60)
    assert not worker.is_alive()
    assert _ids(storage) == [42, 58, 80]  # the ingest's new row stays; its row already past the period went too
    assert outcome["t"].rows == 3  # hours 10 and 30 of the first run, hour 11 of the ingest
    manifest = lake.read_manifest(storage, "ds")
    assert [r["run_id"] for r in manifest.runs][-2:] == ["20260305T000000Z-ingest", "20260305T000000Z-retain"]
