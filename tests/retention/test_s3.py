"""Retention on an S3 workspace (moto_server): the lake's straddling file is downloaded, rewritten and committed,
the old files go, and a second run finds nothing to do."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake, lake_commit
from kfloop.retention.lake_trim import trim
from kfloop.storage import S3Storage
from tests.retention.test_overlap import DAY, SCHEMA, _stored

pytestmark = pytest.mark.s3


def test_retention_trims_a_lake_dataset_on_s3(s3_storage: S3Storage) -> None:
    files, run = _stored(s3_storage, "20260301T000000Z-aaaaaa", [10, 30, 42, 58])
    with lake_commit.transaction(s3_storage, "ds", run["run_id"]) as txn:
        txn.stage(*(f.key for f in files))
        txn.commit(lambda cur: lake_commit.appended(cur, files, run), lake.new_manifest("ds", SCHEMA))
    policy = lake_commit.CommitPolicy(retire_grace_s=0)
    done = trim(s3_storage, "ds", "ts", DAY + timedelta(hours=36), "20260305T000000Z-retain", policy=policy)
    assert (done.rows, done.files, done.rewritten) == (2, 1, 1)
    manifest = lake.read_manifest(s3_storage, "ds")
    ids = sorted(
        i
        for f in manifest.files
        for i in pq.read_table(pa.BufferReader(s3_storage.read_bytes(f.key)))["id"].to_pylist()
    )
    assert ids == [42, 58]
    assert set(s3_storage.list("lake/ds/data/")) == {f.key for f in manifest.files}  # the old files are gone
    again = trim(s3_storage, "ds", "ts", DAY + timedelta(hours=36), "20260305T000001Z-retain", policy=policy)
    assert (again.rows, again.files, again.rewritten) == (0, 0, 0)
