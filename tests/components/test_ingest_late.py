"""Late data at ingest: rows within ``source.allowed_lateness`` land, older new rows are kept aside and reported,
re-sent rows are skipped, bad rows are quarantined once, and a re-sent row with a changed label replaces the
earlier one downstream."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from rich.table import Table

from kfloop import lake, layout
from kfloop.cli.summary import ingest_table
from kfloop.components.ingest import ingest
from kfloop.components.validate import validate
from kfloop.config import parse_config
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.errors import ConfigError
from kfloop.storage import LocalStorage
from tests.components.test_ingest import read_lake
from tests.conftest import demo_config


def render(table: Table) -> str:
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(table)
    return " ".join(console.export_text().split())


def held_back(frame: pd.DataFrame, window: timedelta) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """(first file, rows missing from it within ``window`` of its watermark, older rows missing from it, watermark)."""
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    cut = frame["event_timestamp"].iloc[len(frame) * 3 // 4]
    ts = frame["event_timestamp"]
    recent = frame[(ts < cut) & (ts > cut - window)].iloc[::3]
    old = frame[ts < cut - 2 * window].iloc[::50]
    first = frame[(ts <= cut) & ~frame.index.isin(recent.index) & ~frame.index.isin(old.index)]
    return first, recent, old, cut


def test_rows_within_allowed_lateness_land_and_older_ones_are_kept_aside(tmp_path: Path) -> None:
    frame = generate(DemoSpec(rows=2000, seed=7)).frame
    first, recent, old, cut = held_back(frame, timedelta(days=2))
    assert len(recent) and len(old)
    cfg = demo_config(tmp_path / "ws", allowed_lateness="2d")
    storage = LocalStorage(tmp_path / "ws")
    write_frame(first, tmp_path / "first.csv", "csv")
    write_frame(frame, tmp_path / "all.csv", "csv")
    one = ingest(cfg, storage, source_uri=str(tmp_path / "first.csv"))
    assert one.watermark_after == cut.isoformat()
    two = ingest(cfg, storage, source_uri=str(tmp_path / "all.csv"))
    newer = (frame["event_timestamp"] > cut).sum()
    assert (two.rows_skipped, two.rows_late, two.rows_too_late) == (len(first), len(recent), len(old))
    assert two.rows_written == newer + len(recent)
    assert two.rows_read == two.rows_written + two.rows_skipped + two.rows_too_late + two.rows_quarantined
    got = read_lake(storage)
    assert got["transaction_id"].is_unique and len(got) == len(frame) - len(old)
    assert set(recent["transaction_id"]) <= set(got["transaction_id"])
    # nothing is lost: the too-late rows are in their side file, with the reason, and in the run record
    assert two.too_late_uri is not None
    aside = pq.read_table(two.too_late_uri).to_pandas()
    assert sorted(aside["transaction_id"]) == sorted(old["transaction_id"])
    assert aside["_reason"].str.contains("before the watermark .* minus source.allowed_lateness 2d").all()
    manifest = lake.read_manifest(storage, "transactions")
    assert manifest is not None
    run = manifest.runs[-1]
    assert (run["rows_late"], run["rows_too_late"]) == (len(recent), len(old))
    assert run["too_late"] == layout.too_late_key("transactions", two.run_id)
    record = json.loads(storage.read_text(layout.run_record_key("transactions", two.run_id)))
    assert record["rows_too_late"] == len(old)
    text = render(ingest_table(two.to_dict()))
    assert f"rows late (within allowed lateness) {len(recent)}" in text.replace("│ ", "")
    assert f"rows too late (not ingested) {len(old)}" in text.replace("│ ", "")
    # the side file stays referenced: a later run's sweep keeps it
    write_frame(frame.iloc[:1], tmp_path / "again.parquet", "parquet")
    ingest(cfg, storage, source_uri=str(tmp_path / "again.parquet"))
    assert storage.exists(layout.too_late_key("transactions", two.run_id))


def test_default_lateness_reports_older_new_rows_instead_of_skipping_them(tmp_path: Path) -> None:
    frame = generate(DemoSpec(rows=2000, seed=7)).frame
    first, recent, old, _ = held_back(frame, timedelta(days=2))
    cfg = demo_config(tmp_path / "ws")
    assert cfg.source.allowed_lateness == "0s"
    storage = LocalStorage(tmp_path / "ws")
    write_frame(first, tmp_path / "first.parquet", "parquet")
    write_frame(frame, tmp_path / "all.parquet", "parquet")
    ingest(cfg, storage, source_uri=str(tmp_path / "first.parquet"))
    two = ingest(cfg, storage, source_uri=str(tmp_path / "all.parquet"))
    assert (two.rows_skipped, two.rows_late, two.rows_too_late) == (len(first), 0, len(recent) + len(old))
    assert "rows too late (not ingested)" in render(ingest_table(two.to_dict()))
    # the same rows again (other bytes): reported once, so nothing new is too late now
    write_frame(frame, tmp_path / "all.csv", "csv")
    three = ingest(cfg, storage, source_uri=str(tmp_path / "all.csv"))
    assert (three.rows_written, three.rows_too_late, three.rows_skipped) == (0, 0, len(frame))
    assert three.too_late_uri is None


def test_raising_allowed_lateness_and_ingesting_the_same_file_again_takes_its_too_late_rows(tmp_path: Path) -> None:
    frame = generate(DemoSpec(rows=2000, seed=7)).frame
    first, recent, old, _ = held_back(frame, timedelta(days=2))
    storage = LocalStorage(tmp_path / "ws")
    write_frame(first, tmp_path / "first.csv", "csv")
    write_frame(frame, tmp_path / "all.csv", "csv")
    strict = demo_config(tmp_path / "ws")
    ingest(strict, storage, source_uri=str(tmp_path / "first.csv"))
    two = ingest(strict, storage, source_uri=str(tmp_path / "all.csv"))
    assert two.rows_too_late == len(recent) + len(old)
    assert ingest(strict, storage, source_uri=str(tmp_path / "all.csv")).already_ingested  # same bytes, same rules
    wider = demo_config(tmp_path / "ws", allowed_lateness="3650d")  # back from the watermark, which moved on
    three = ingest(wider, storage, source_uri=str(tmp_path / "all.csv"))  # the same bytes, a wider window
    assert not three.already_ingested
    taken = len(recent) + len(old)
    assert (three.rows_written, three.rows_late, three.rows_too_late) == (taken, taken, 0)
    assert three.rows_skipped == len(frame) - taken
    assert set(read_lake(storage)["transaction_id"]) == set(frame["transaction_id"])
    assert ingest(wider, storage, source_uri=str(tmp_path / "all.csv")).already_ingested
    assert ingest(strict, storage, source_uri=str(tmp_path / "all.csv")).already_ingested  # a narrower one too


def test_the_same_file_read_meanwhile_under_a_narrower_lateness_lands_once(tmp_path: Path) -> None:
    frame = generate(DemoSpec(rows=2000, seed=7)).frame
    first, recent, old, _ = held_back(frame, timedelta(days=2))
    storage = LocalStorage(tmp_path / "ws")
    write_frame(first, tmp_path / "first.csv", "csv")
    write_frame(frame, tmp_path / "all.csv", "csv")
    ingest(demo_config(tmp_path / "ws"), storage, source_uri=str(tmp_path / "first.csv"))
    inner: list = []

    def meanwhile(_: int) -> None:  # a run with the default lateness commits the same bytes while this one reads
        if not inner:
            inner.append(ingest(demo_config(tmp_path / "ws"), storage, source_uri=str(tmp_path / "all.csv")))

    wider = demo_config(tmp_path / "ws", allowed_lateness="3650d")
    outer = ingest(wider, storage, source_uri=str(tmp_path / "all.csv"), on_batch=meanwhile)
    assert inner and not inner[0].already_ingested
    assert outer.already_ingested  # its split predates the other commit: it commits nothing
    lake_rows = read_lake(storage)
    assert lake_rows["transaction_id"].is_unique  # no row twice
    again = ingest(wider, storage, source_uri=str(tmp_path / "all.csv"))  # run again: the wider window's rows
    assert again.rows_written == len(recent) + len(old) and read_lake(storage)["transaction_id"].is_unique


def test_reingest_does_not_quarantine_the_same_bad_rows_again(tmp_path: Path) -> None:
    data = generate(DemoSpec(rows=2000, seed=3, defects=DefectSpec(wrong_types=0.02)))
    frame = data.frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    broken = "tx-broken,c-1,m-1,2026-02-01T00:00:00+00:00,12.5\n"  # a malformed record: too few fields
    part, whole = tmp_path / "part.csv", tmp_path / "whole.csv"
    write_frame(frame.iloc[:1500], part, "csv")
    write_frame(frame, whole, "csv")
    for path in (part, whole):
        with open(path, "a") as fh:
            fh.write(broken)
    cfg = demo_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    one = ingest(cfg, storage, source_uri=str(part))
    bad = frame["transaction_id"].isin(data.injected["wrong_types"])
    assert one.rows_quarantined == bad.iloc[:1500].sum() + 1
    two = ingest(cfg, storage, source_uri=str(whole))
    assert two.rows_quarantined == bad.iloc[1500:].sum()  # only the new file part's bad rows; no second malformed
    assert two.rows_skipped == 1500 + 1  # good rows already in the lake and bad ones already quarantined
    assert two.rows_written == (~bad.iloc[1500:]).sum()
    q = pq.read_table(two.quarantine_uri).to_pandas()
    assert set(q["transaction_id"].dropna()) == set(frame["transaction_id"].iloc[1500:][bad.iloc[1500:]])
    lake_ids = read_lake(storage)["transaction_id"]
    assert lake_ids.is_unique and len(lake_ids) == (~bad).sum()
    # the quality report counts each rejected row once
    report = validate(cfg, storage).report
    parse = next(c for c in report.checks if c.check == "ingest.parse")
    assert parse.failed == bad.sum() + 1


@pytest.mark.parametrize("mode", ["keep_latest", "keep_last_ingested"])
def test_a_later_label_for_a_known_key_replaces_the_row_in_the_clean_data(tmp_path: Path, mode: str) -> None:
    frame = generate(DemoSpec(rows=2000, seed=7)).frame.sort_values("event_timestamp").reset_index(drop=True)
    cfg = demo_config(tmp_path / "ws", allowed_lateness="7d")
    data = cfg.model_dump(mode="json")
    data["contract"]["duplicates"]["mode"] = mode
    cfg = parse_config(data, "test config")
    storage = LocalStorage(tmp_path / "ws")
    write_frame(frame, tmp_path / "all.parquet", "parquet")
    ingest(cfg, storage, source_uri=str(tmp_path / "all.parquet"))
    update = frame.iloc[[-5]].copy()
    update["is_fraud"] = 1 - update["is_fraud"]  # the label, now known, differs from the first delivery
    write_frame(update, tmp_path / "label.parquet", "parquet")
    result = ingest(cfg, storage, source_uri=str(tmp_path / "label.parquet"))
    assert (result.rows_written, result.rows_late) == (1, 1)
    validate(cfg, storage)
    clean = read_lake(storage, layout.clean_dataset("transactions"))
    row = clean[clean["transaction_id"] == update["transaction_id"].iloc[0]]
    assert len(row) == 1 and row["is_fraud"].iloc[0] == update["is_fraud"].iloc[0]
    assert len(clean) == len(frame)


def test_allowed_lateness_uses_the_duration_grammar() -> None:
    with pytest.raises(ConfigError, match="allowed_lateness"):
        demo_config(allowed_lateness="two days")
