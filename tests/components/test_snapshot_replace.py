"""A snapshot attribute table (no ``timestamp_column``) is its file: each changed file replaces the table.

A reverted file (A → B → A) reverts the lake, the clean dataset, the training set and the online store; a key
removed from the file leaves the clean table and the online store; the current version's bytes again are
already ingested, an older version's bytes are ingested again; unparsable rows are quarantined once; of two
overlapping ingests the last to commit is the whole table, and the files it replaced are retired, then deleted
after the grace period.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.components.features import compute_features
from kfloop.components.ingest import IngestResult, ingest
from kfloop.components.validate import validate
from kfloop.config import Config
from kfloop.lake_commit import CommitPolicy
from kfloop.layout import clean_dataset, quarantine_key, stale_key
from kfloop.storage import Storage
from tests.components.test_tables import (
    MERCHANT_CSV,
    MERCHANT_FEATURES,
    MERCHANTS,
    build,
    lookup,
    training_rows,
)
from tests.feature_repo.harness import NOW, Loop

#: MERCHANT_CSV with m-1's capacity changed (version B).
CHANGED = MERCHANT_CSV.replace("m-1,north,10,", "m-1,north,15,")


def rows_of(storage: Storage, dataset: str) -> pd.DataFrame:
    """Exactly what the committed manifest lists, by merchant."""
    manifest = lake.read_manifest(storage, dataset)
    assert manifest is not None
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f.key))) for f in manifest.files]
    if not tables:
        return pd.DataFrame(columns=["merchant_id"])
    return pa.concat_tables(tables).to_pandas().sort_values("merchant_id").reset_index(drop=True)


def capacities(storage: Storage, dataset: str) -> dict[str, int]:
    frame = rows_of(storage, dataset)
    return dict(zip(frame["merchant_id"], frame["capacity"], strict=True))


def table_config(loop: Loop) -> Config:
    return loop.config.table_config(MERCHANTS)


def ingest_file(loop: Loop, csv: str, path: Path, **kwargs: object) -> IngestResult:
    path.write_text(csv)
    return ingest(table_config(loop), loop.storage, source_uri=str(path), **kwargs)


def validate_table(loop: Loop) -> None:
    result = validate(table_config(loop), loop.storage, now=NOW)
    assert result.report.gate_passed, [c.check for c in result.report.checks if not c.passed]


def refresh(loop: Loop) -> dict:
    """Validate the table, then features and materialize: what each view's update did."""
    validate_table(loop)
    updates = {u.view: u for u in compute_features(loop.config, loop.storage)}
    loop.materialize()
    return updates


def served_capacity(loop: Loop, merchant: str) -> object:
    return lookup(loop, "2026-01-01T13:00:00").get({"customer_id": "c-1", "merchant_id": merchant})["capacity"]


def test_the_snapshot_table_is_ingested_as_a_replacing_source(tmp_path: Path) -> None:
    loop, _ = build(tmp_path)
    config = table_config(loop)
    assert config.source.replace and not loop.config.source.replace
    weather = loop.config.table_config("customer_weather")
    assert not weather.source.replace  # a timestamped table appends by event time


def test_a_reverted_file_reverts_everywhere_and_only_the_current_bytes_are_already_ingested(tmp_path: Path) -> None:
    loop, _ = build(tmp_path)
    a_path, b_path = tmp_path / "merchants.csv", tmp_path / "merchants-b.csv"
    b = ingest_file(loop, CHANGED, b_path)
    assert not b.already_ingested and b.rows_written == 3 and b.dataset_rows == 3
    assert (b.rows_skipped, b.rows_late, b.rows_too_late) == (0, 0, 0)
    refresh(loop)
    assert capacities(loop.storage, clean_dataset(MERCHANTS)) == {"m-1": 15, "m-2": 20}
    assert served_capacity(loop, "m-1") == 15

    again = ingest(table_config(loop), loop.storage, source_uri=str(b_path))  # the current version's bytes
    assert again.already_ingested and again.rows_written == 0

    reverted = ingest(table_config(loop), loop.storage, source_uri=str(a_path))  # A's exact bytes, after B
    assert not reverted.already_ingested and reverted.rows_written == 3 and reverted.dataset_rows == 3
    assert capacities(loop.storage, MERCHANTS) == {"m-1": 10, "m-2": 20, "m-3": -5}  # the lake is file A
    updates = refresh(loop)
    assert (updates[MERCHANTS].rows_added, updates[MERCHANTS].rows_removed) == (1, 1)
    assert capacities(loop.storage, clean_dataset(MERCHANTS)) == {"m-1": 10, "m-2": 20}
    assert loop.offline(MERCHANTS).set_index("merchant_id").loc["m-1", "capacity"] == 10
    assert served_capacity(loop, "m-1") == 10
    assert loop.online([{"customer_id": "c-1", "merchant_id": "m-1"}])["capacity"] == [10]
    rows = training_rows(pd.concat(loop.splits(loop.training_set()).values(), ignore_index=True))
    assert rows["tx-1"]["capacity"] == 10

    assert ingest(table_config(loop), loop.storage, source_uri=str(a_path)).already_ingested


def test_a_key_removed_from_the_file_leaves_the_clean_table_and_the_online_store(tmp_path: Path) -> None:
    loop, _ = build(tmp_path)
    assert served_capacity(loop, "m-2") == 20
    without_m2 = "".join(line for line in MERCHANT_CSV.splitlines(keepends=True) if not line.startswith("m-2,"))
    result = ingest_file(loop, without_m2, tmp_path / "merchants-c.csv")
    assert result.dataset_rows == 2
    updates = refresh(loop)
    assert updates[MERCHANTS].rows_removed == 1 and updates[MERCHANTS].rows_added == 0
    assert capacities(loop.storage, clean_dataset(MERCHANTS)) == {"m-1": 10}
    assert loop.offline(MERCHANTS)["merchant_id"].tolist() == ["m-1"]
    assert not loop.storage.exists(stale_key(MERCHANTS))  # materialize consumed it
    gone = lookup(loop, "2026-01-01T13:00:00").get({"customer_id": "c-1", "merchant_id": "m-2"})
    assert [gone[n] for n in MERCHANT_FEATURES] == [None] * len(MERCHANT_FEATURES)
    assert served_capacity(loop, "m-1") == 10


def test_unparsable_rows_are_quarantined_once_across_versions(tmp_path: Path) -> None:
    loop, _ = build(tmp_path)
    bad = "m-9,east,many,true,0.2\n"  # capacity is not an int64
    a = ingest_file(loop, MERCHANT_CSV + bad, tmp_path / "a.csv")
    assert (a.rows_written, a.rows_quarantined) == (3, 1) and a.quarantine_uri
    b = ingest_file(loop, CHANGED + bad, tmp_path / "b.csv")
    assert (b.rows_written, b.rows_quarantined, b.rows_skipped) == (3, 0, 1)  # already in a committed quarantine
    back = ingest(table_config(loop), loop.storage, source_uri=str(tmp_path / "a.csv"))
    assert (back.rows_written, back.rows_quarantined) == (3, 0) and not back.already_ingested
    assert capacities(loop.storage, MERCHANTS) == {"m-1": 10, "m-2": 20, "m-3": -5}
    assert loop.storage.exists(quarantine_key(MERCHANTS, a.run_id))  # still the committed quarantine of A's rows


def test_overlapping_ingests_leave_one_complete_version(tmp_path: Path) -> None:
    loop, _ = build(tmp_path)
    before = lake.read_manifest(loop.storage, MERCHANTS)
    assert before is not None
    inner: list = []

    def meanwhile(_: int) -> None:  # another run ingests B and commits while this one is staging C
        if not inner:
            inner.append(ingest_file(loop, CHANGED, tmp_path / "b.csv"))

    wider = MERCHANT_CSV + "m-5,west,50,false,0.3\n"
    outer = ingest_file(loop, wider, tmp_path / "c.csv", on_batch=meanwhile)
    assert inner and not inner[0].already_ingested and not outer.already_ingested
    manifest = lake.read_manifest(loop.storage, MERCHANTS)
    assert manifest is not None and manifest.rows == 4 == outer.dataset_rows
    assert {f.run_id for f in manifest.files} == {outer.run_id}  # the last commit is the whole table
    assert capacities(loop.storage, MERCHANTS) == {"m-1": 10, "m-2": 20, "m-3": -5, "m-5": 50}
    retired = {r.key for r in manifest.retired}
    assert {f.key for f in before.files} <= retired and all(loop.storage.exists(k) for k in retired)
    assert any(k for k in retired if inner[0].run_id in k)  # B's files: retired, readable for the grace period

    # past the grace period, the next changed file's commit deletes every replaced file
    last = ingest_file(loop, CHANGED, tmp_path / "d.csv", policy=CommitPolicy(retire_grace_s=0))
    assert last.dataset_rows == 3
    final = lake.read_manifest(loop.storage, MERCHANTS)
    assert final is not None and not final.retired
    assert not any(loop.storage.exists(k) for k in retired | {f.key for f in manifest.files})
    assert capacities(loop.storage, MERCHANTS) == {"m-1": 15, "m-2": 20, "m-3": -5}
