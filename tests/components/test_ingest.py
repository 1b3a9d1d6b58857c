"""Ingestion: formats, S3 and HTTP sources, incremental + idempotent, quarantine, errors, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop import lake
from kfloop.components.ingest import ingest
from kfloop.config import Config
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.errors import ConfigError, SchemaChangeError, SourceError
from kfloop.storage import LocalStorage, S3Storage, Storage
from tests.conftest import REPO, demo_config

FORMATS = {"csv": "src.csv", "parquet": "src.parquet", "jsonl": "src.jsonl", "avro": "src.avro"}


def make_source(tmp_path: Path, rows: int = 2000, fmt: str = "csv", **spec: object) -> tuple[Path, pd.DataFrame]:
    data = generate(DemoSpec(rows=rows, seed=7, **spec))
    path = tmp_path / FORMATS[fmt]
    write_frame(data.frame, path, fmt)
    return path, data.frame


def read_lake(storage: Storage, dataset: str = "transactions") -> pd.DataFrame:
    """Read exactly what the committed manifest lists (what downstream stages see)."""
    manifest = lake.read_manifest(storage, dataset)
    assert manifest is not None
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f.key))) for f in manifest.files]
    return pa.concat_tables(tables).to_pandas().sort_values("transaction_id").reset_index(drop=True)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_lands_typed_and_partitioned(tmp_path: Path, fmt: str) -> None:
    src, frame = make_source(tmp_path, fmt=fmt)
    cfg = demo_config(tmp_path / "ws", uri=str(src), format="auto")
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(cfg, storage)
    assert (result.rows_read, result.rows_written, result.rows_quarantined) == (len(frame), len(frame), 0)
    got = read_lake(storage)
    want = frame.sort_values("transaction_id").reset_index(drop=True)
    assert list(got.columns) == list(cfg.source.columns)
    assert str(got["event_timestamp"].dt.tz) == "UTC"
    pd.testing.assert_series_equal(got["amount"], want["amount"], check_names=False)
    assert (got["event_timestamp"] == want["event_timestamp"]).all()
    assert got["hour_of_day"].dtype == "int64"
    manifest = lake.read_manifest(storage, "transactions")
    assert manifest is not None
    assert all(f.key.startswith(f"lake/transactions/data/event_date={f.event_date}/") for f in manifest.files)
    assert manifest.watermark == want["event_timestamp"].max().isoformat()


def test_manifest_records_rows_hashes_and_event_range(tmp_path: Path) -> None:
    src, frame = make_source(tmp_path)
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(demo_config(tmp_path / "ws", uri=str(src)), storage)
    body = json.loads(storage.read_text("lake/transactions/_manifest.json"))
    assert body["rows"] == len(frame) == result.dataset_rows
    assert body["content_hash"] == result.content_hash and len(body["content_hash"]) == 64
    assert body["schema_hash"] == result.schema_hash
    assert body["min_event_time"] == frame["event_timestamp"].min().isoformat()
    assert body["max_event_time"] == body["watermark"]
    run = json.loads(storage.read_text(f"lake/transactions/_runs/{result.run_id}.json"))
    assert run["rows_written"] == len(frame) and run["source"] == str(src)


def test_rerun_on_same_input_adds_nothing(tmp_path: Path) -> None:
    src, frame = make_source(tmp_path)
    cfg = demo_config(tmp_path / "ws", uri=str(src))
    storage = LocalStorage(tmp_path / "ws")
    first = ingest(cfg, storage)
    again = ingest(cfg, storage)
    assert again.already_ingested and again.rows_written == 0
    assert again.content_hash == first.content_hash and again.dataset_rows == len(frame)
    # the same rows in another file (other bytes) are all at or before the watermark
    pq_path = tmp_path / "same.parquet"
    write_frame(frame, pq_path, "parquet")
    other = ingest(cfg, storage, source_uri=str(pq_path))
    assert (other.rows_written, other.rows_skipped) == (0, len(frame))
    assert other.content_hash == first.content_hash


def test_incremental_only_takes_rows_newer_than_watermark(tmp_path: Path) -> None:
    _, frame = make_source(tmp_path, rows=3000)
    cut = frame["event_timestamp"].iloc[len(frame) // 2]
    early, everything = tmp_path / "early.csv", tmp_path / "all.csv"
    write_frame(frame[frame["event_timestamp"] <= cut], early, "csv")
    write_frame(frame, everything, "csv")
    cfg = demo_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    first = ingest(cfg, storage, source_uri=str(early))
    second = ingest(cfg, storage, source_uri=str(everything))
    assert first.watermark_after == cut.isoformat()
    assert second.rows_skipped == first.rows_written
    assert first.rows_written + second.rows_written == len(frame) == second.dataset_rows
    got = read_lake(storage)
    assert got["transaction_id"].is_unique and len(got) == len(frame)


def test_bad_rows_are_quarantined_with_reasons_and_nothing_is_lost(tmp_path: Path) -> None:
    data = generate(DemoSpec(rows=2000, seed=3, defects=DefectSpec(wrong_types=0.01)))
    src = tmp_path / "src.csv"
    write_frame(data.frame, src, "csv")
    with open(src, "a") as fh:  # a malformed record: too few fields
        fh.write("tx-broken,c-1,m-1,2026-02-01T00:00:00+00:00,12.5\n")
    total = len(data.frame) + 1
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(demo_config(tmp_path / "ws", uri=str(src)), storage)
    assert result.rows_read == total
    assert result.rows_written + result.rows_quarantined == total
    q = pq.read_table(result.quarantine_uri).to_pandas()
    assert set(data.injected["wrong_types"]) <= set(q["transaction_id"].dropna())
    bad_typed = q[q["transaction_id"].isin(data.injected["wrong_types"])]
    assert bad_typed["_reason"].str.contains(r"^(?:amount|distance_from_home_km): '.*' is not a valid float64").all()
    broken = q[q["_raw"].fillna("").str.startswith("tx-broken")]
    assert len(broken) == 1 and broken["_row"].iloc[0] == total + 1  # line number (header = line 1)
    assert "expected 10 fields, got 5" in broken["_reason"].iloc[0]
    # the line numbers of cast failures point at the right lines of the file
    lines = src.read_text().splitlines()
    for _, row in bad_typed.head(5).iterrows():
        assert lines[row["_row"] - 1].startswith(row["transaction_id"] + ",")
    assert not read_lake(storage)["transaction_id"].isin(data.injected["wrong_types"]).any()


def test_required_columns_missing_values_are_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "src.csv"
    src.write_text(
        "transaction_id,customer_id,merchant_id,event_timestamp,amount,merchant_category,channel,"
        "distance_from_home_km,hour_of_day,is_fraud\n"
        "t1,c1,m1,2026-01-01T01:00:00Z,1,grocery,pos,1,1,0\n"
        "t2,,m1,2026-01-01T02:00:00Z,1,grocery,pos,1,2,0\n"
        "t3,c1,m1,,1,grocery,pos,1,3,0\n"
        "t4,c1,m1,yesterday,1,grocery,pos,1,3,0\n"
    )
    result = ingest(demo_config(tmp_path / "ws", uri=str(src)), LocalStorage(tmp_path / "ws"))
    q = pq.read_table(result.quarantine_uri).to_pandas().set_index("transaction_id")
    assert result.rows_written == 1
    assert q.loc["t2", "_reason"] == "customer_id: missing value (required)"
    assert q.loc["t3", "_reason"] == "event_timestamp: missing value (required)"
    assert q.loc["t4", "_reason"] == "event_timestamp: 'yesterday' is not a valid timestamp"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"PAR1\x00\x00garbage", r"src\.parquet: cannot read as parquet"),
        (None, r"src\.parquet: source file not found"),
    ],
)
def test_unreadable_file_fails_with_its_name(tmp_path: Path, content: bytes | None, match: str) -> None:
    src = tmp_path / "src.parquet"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(SourceError, match=match):
        ingest(demo_config(tmp_path / "ws", uri=str(src)), LocalStorage(tmp_path / "ws"))


def test_missing_column_is_named(tmp_path: Path) -> None:
    src, frame = make_source(tmp_path, rows=100)
    write_frame(frame.drop(columns=["channel"]), src, "csv")
    with pytest.raises(SchemaChangeError, match=r"src\.csv: breaking schema change: missing column channel"):
        ingest(demo_config(tmp_path / "ws", uri=str(src)), LocalStorage(tmp_path / "ws"))


def test_invalid_json_lines_are_quarantined_with_line_numbers(tmp_path: Path) -> None:
    src, _frame = make_source(tmp_path, rows=50, fmt="jsonl")
    with open(src, "a") as fh:
        fh.write("{not json\n[1, 2]\n")
    result = ingest(demo_config(tmp_path / "ws", uri=str(src)), LocalStorage(tmp_path / "ws"))
    q = pq.read_table(result.quarantine_uri).to_pandas()
    assert result.rows_written == 50
    assert sorted(q["_row"]) == [51, 52]
    assert {r.split(":")[0] for r in q["_reason"]} == {"invalid JSON", "not a JSON object"}


def test_schema_change_against_the_lake_is_refused(tmp_path: Path) -> None:
    src, _ = make_source(tmp_path, rows=100)
    storage = LocalStorage(tmp_path / "ws")
    cfg = demo_config(tmp_path / "ws", uri=str(src))
    ingest(cfg, storage)
    columns = dict(cfg.source.columns) | {"hour_of_day": "float64"}
    changed = demo_config(tmp_path / "ws", uri=str(src), columns={k: str(v) for k, v in columns.items()})
    with pytest.raises(ConfigError, match="hour_of_day: lake int64 vs config double"):
        ingest(changed, storage)


def test_streams_in_batches(tmp_path: Path) -> None:
    src, frame = make_source(tmp_path, rows=12_000)
    seen: list[int] = []
    cfg = demo_config(tmp_path / "ws", uri=str(src), batch_rows=1000)
    ingest(cfg, LocalStorage(tmp_path / "ws"), on_batch=seen.append)
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == len(frame)


def test_failure_while_storing_leaves_the_lake_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, frame = make_source(tmp_path, rows=3000)
    cut = frame["event_timestamp"].iloc[1000]
    early = tmp_path / "early.csv"
    write_frame(frame[frame["event_timestamp"] <= cut], early, "csv")
    storage = LocalStorage(tmp_path / "ws")
    cfg = demo_config(tmp_path / "ws", uri=str(src))
    before = ingest(cfg, storage, source_uri=str(early))
    manifest_before = storage.read_text("lake/transactions/_manifest.json")

    uploads = {"n": 0}
    real_move = LocalStorage.move_file

    def failing_move(self: LocalStorage, path: Path, key: str) -> None:
        uploads["n"] += 1
        if uploads["n"] > 3:
            raise OSError("disk full (simulated)")
        real_move(self, path, key)

    monkeypatch.setattr(LocalStorage, "move_file", failing_move)
    with pytest.raises(OSError, match="simulated"):
        ingest(cfg, storage)
    monkeypatch.undo()
    assert storage.read_text("lake/transactions/_manifest.json") == manifest_before
    assert read_lake(storage)["transaction_id"].tolist() == sorted(
        frame[frame["event_timestamp"] <= cut]["transaction_id"]
    )
    after = ingest(cfg, storage)  # the re-run cleans the orphans and completes
    assert after.dataset_rows == len(frame) == before.rows_written + after.rows_written
    listed = {f.key for f in lake.read_manifest(storage, "transactions").files}  # type: ignore[union-attr]
    assert set(storage.list("lake/transactions/data/")) == listed


@pytest.mark.slow
def test_killed_process_leaves_a_consistent_lake(tmp_path: Path) -> None:
    src, frame = make_source(tmp_path, rows=150_000)
    ws = tmp_path / "ws"
    cfg_path = tmp_path / "kfloop.yaml"
    cfg = demo_config(ws, uri=str(src), batch_rows=5000)
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    cmd = [sys.executable, "-m", "kfloop", "ingest", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = LocalStorage(ws)
    manifest = lake.read_manifest(storage, "transactions")
    if manifest is not None:  # the kill came after the commit: it must be complete and intact
        for f in manifest.files:
            assert storage.exists(f.key)
    completed = ingest(cfg, storage)
    assert completed.dataset_rows == len(frame)
    assert read_lake(storage)["transaction_id"].is_unique
    listed = {f.key for f in lake.read_manifest(storage, "transactions").files}  # type: ignore[union-attr]
    assert set(storage.list("lake/transactions/data/")) == listed


@pytest.mark.s3
def test_s3_round_trip(tmp_path: Path, s3_storage: S3Storage, bucket: str) -> None:
    src, frame = make_source(tmp_path, rows=1500, fmt="parquet")
    s3_storage.client.fput_object(bucket, "incoming/src.parquet", str(src))
    uri = f"s3://{bucket}/incoming/src.parquet"
    cfg: Config = demo_config(None, uri=uri)
    result = ingest(cfg, s3_storage, s3=s3_storage.client)
    assert result.rows_written == len(frame)
    assert result.manifest_uri == f"s3://{bucket}/ws/lake/transactions/_manifest.json"
    got = read_lake(s3_storage)
    assert len(got) == len(frame) and got["transaction_id"].is_unique
    assert ingest(cfg, s3_storage, s3=s3_storage.client).already_ingested


@pytest.mark.s3
def test_s3_missing_object_is_a_clear_error(tmp_path: Path, s3_storage: S3Storage, bucket: str) -> None:
    cfg = demo_config(None, uri=f"s3://{bucket}/nope.csv")
    with pytest.raises(SourceError, match=rf"s3://{bucket}/nope.csv: cannot download: NoSuchKey"):
        ingest(cfg, s3_storage, s3=s3_storage.client)


def test_http_source(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    src, frame = make_source(tmp_path, rows=500)
    (root / "tx.csv").write_bytes(src.read_bytes())
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(demo_config(tmp_path / "ws", uri=f"{base}/tx.csv"), storage)
    assert result.rows_written == len(frame)
    with pytest.raises(SourceError, match=r"/missing.csv: HTTP 404"):
        ingest(demo_config(tmp_path / "ws", uri=f"{base}/missing.csv"), storage)


def test_timestamps_without_offset_are_utc(tmp_path: Path) -> None:
    src = tmp_path / "src.csv"
    src.write_text(
        "transaction_id,customer_id,merchant_id,event_timestamp,amount,merchant_category,channel,"
        "distance_from_home_km,hour_of_day,is_fraud\n"
        "t1,c1,m1,2026-01-01 01:00:00,1,grocery,pos,1,1,0\n"
        "t2,c1,m1,2026-01-01T03:00:00+02:00,1,grocery,pos,1,1,0\n"
    )
    storage = LocalStorage(tmp_path / "ws")
    ingest(demo_config(tmp_path / "ws", uri=str(src)), storage)
    got = read_lake(storage)["event_timestamp"].tolist()
    assert got == [datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)]


DERIVED_HEADER = (
    "tx_no,customer_id,merchant_id,date,time,amount,merchant_category,channel,distance_from_home_km,score\n"
)
DERIVED_SOURCE = {
    "columns": {
        "tx_no": "int64",
        "customer_id": "string",
        "merchant_id": "string",
        "date": "string",
        "time": "string",
        "amount": "float64",
        "merchant_category": "string",
        "channel": "string",
        "distance_from_home_km": "float64",
        "score": "float64",
    },
    "derived": {
        "transaction_id": {"expression": "concat('tx-', tx_no)", "type": "string"},
        "event_timestamp": {"expression": "timestamp(date, time)", "type": "timestamp"},
        "hour_of_day": {"expression": "hour(event_timestamp)", "type": "int64"},
        "is_fraud": {"expression": "score > 0.5", "type": "int64"},
    },
    "timezone": "Europe/Berlin",
    "null_values": ["NA"],
}


def test_derived_columns_time_zone_and_null_tokens_land_in_the_lake(tmp_path: Path) -> None:
    src = tmp_path / "src.csv"
    body = (
        "1,c1,m1,2026-01-10,08:30,12.5,grocery,pos,NA,0.9\n"
        "2,c1,m2,2026-03-29,02:30,3,retail,online,1,0.1\n"  # skipped by the spring-forward change in Berlin
        "3,c2,m1,2026-10-25,02:30,4,retail,pos,2,0.2\n"  # happens twice: the first (CEST) is taken
        "4,c2,m1,2026-13-01,10:00,5,retail,pos,NA,0.2\n"  # no month 13
        "5,c3,m3,2026-06-01,23:15,NA,retail,pos,3,NA\n"
    )
    src.write_bytes(b"\xef\xbb\xbf" + (DERIVED_HEADER + body).encode())  # with a UTF-8 byte-order mark
    cfg = demo_config(tmp_path / "ws", uri=str(src), **DERIVED_SOURCE)
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(cfg, storage)
    assert (result.rows_read, result.rows_written, result.rows_quarantined) == (5, 3, 2)
    got = read_lake(storage)
    assert list(got.columns) == list(cfg.source.columns)  # file columns, then derived ones
    assert got["transaction_id"].tolist() == ["tx-1", "tx-3", "tx-5"]
    assert got["event_timestamp"].tolist() == [
        datetime(2026, 1, 10, 7, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 6, 1, 21, 15, tzinfo=UTC),
    ]
    assert got["hour_of_day"].tolist() == [8, 2, 23]  # local hours
    assert got["is_fraud"].tolist()[:2] == [1, 0] and pd.isna(got["is_fraud"].iloc[2])
    assert pd.isna(got["distance_from_home_km"].iloc[0]) and pd.isna(got["amount"].iloc[2])
    q = pq.read_table(result.quarantine_uri).to_pandas().set_index("_row")
    assert q.loc[3, "_reason"] == (
        "event_timestamp: '2026-03-29 02:30' is not a valid timestamp "
        "(local time skipped by a daylight-saving change in Europe/Berlin)"
    )
    assert q.loc[5, "_reason"] == "event_timestamp: '2026-13-01 10:00' is not a valid timestamp"
    assert q.loc[5, "tx_no"] == "4"


def test_null_tokens_in_json_lines(tmp_path: Path) -> None:
    src = tmp_path / "src.jsonl"
    row = {"tx_no": 1, "customer_id": "c1", "merchant_id": "m1", "date": "2026-01-10", "time": "08:30"}
    row |= {"amount": "NA", "merchant_category": "NA", "channel": "pos", "distance_from_home_km": 1, "score": 0.2}
    src.write_text(json.dumps(row) + "\n")
    storage = LocalStorage(tmp_path / "ws")
    result = ingest(demo_config(tmp_path / "ws", uri=str(src), **DERIVED_SOURCE), storage)
    assert (result.rows_written, result.rows_quarantined) == (1, 0)
    got = read_lake(storage)
    assert pd.isna(got["amount"].iloc[0]) and got["merchant_category"].iloc[0] is None
