"""Ingest stage: a source file → the lake (partitioned Parquet), incremental, idempotent, atomic.

Pure core :func:`ingest` (unit tests call it), plus :func:`run_ingest_step`, the pipeline step's entrypoint
(its KFP wrapper is in ``kfloop.pipelines.components``; nothing here imports kfp).
"""

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from minio import Minio

from kfloop import lake, lake_commit, layout
from kfloop.audit import events as audit_events
from kfloop.cast import REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN, quarantine_schema
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.config.source import SourceConfig
from kfloop.contract.report import SchemaChange
from kfloop.contract.schema_diff import describe, diff_schema, drift_from_accepted
from kfloop.derive import cast_and_derive
from kfloop.errors import ConfigError, SchemaChangeError
from kfloop.files import file_sha256
from kfloop.forget.target import entity_keys
from kfloop.forget.tombstone_filter import TombstoneFilter
from kfloop.late_rows import LakeRows, LateSplit, SideRows
from kfloop.lineage.run import emits
from kfloop.schema import arrow_schema
from kfloop.sources import Reject, detect_format, fetch_to_local, iter_batches
from kfloop.sources.observe import observe
from kfloop.step import new_run_id
from kfloop.storage import Storage

RAW_COLUMN = "_raw"


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion run did; written as the run manifest and printed in summaries."""

    run_id: str
    dataset: str
    source: str
    source_sha256: str
    rows_read: int
    rows_written: int
    rows_quarantined: int
    rows_skipped: int  # equal to a row already in the lake or in a committed quarantine or too-late file
    already_ingested: bool  # the same source bytes were ingested by an earlier run
    files: int
    watermark_before: str | None
    watermark_after: str | None
    dataset_rows: int
    schema_hash: str
    content_hash: str
    quarantine_uri: str | None
    manifest_uri: str
    started: str
    seconds: float
    rows_late: int = 0  # of rows_written: at or before the watermark, within source.allowed_lateness
    rows_too_late: int = 0  # new rows older than the allowed lateness: kept aside, not in the lake
    too_late_uri: str | None = None  # where those rows are, with the reason
    rows_erased: int = 0  # rows of entities erased by `kfloop forget`: dropped before anything was stored

    def to_dict(self) -> dict:
        return asdict(self)


def _quarantine_table(bad: pa.Table, rejects: list[Reject], schema: pa.Schema, source: str) -> pa.Table | None:
    """Cast failures and unparsable records in one layout: source columns as text + row, reason, raw."""
    parts = []
    if bad.num_rows:
        parts.append(bad.append_column(RAW_COLUMN, pa.nulls(bad.num_rows, pa.string())))
    if rejects:
        cols = {f.name: pa.nulls(len(rejects), pa.string()) for f in schema}
        cols[ROW_COLUMN] = pa.array([r.row for r in rejects], pa.int64())
        cols[REASON_COLUMN] = pa.array([r.reason for r in rejects], pa.string())
        cols[RAW_COLUMN] = pa.array([r.text for r in rejects], pa.string())
        parts.append(pa.table(cols))
    if not parts:
        return None
    table = pa.concat_tables(parts)
    return table.append_column(SOURCE_COLUMN, pa.array([source] * table.num_rows, pa.string()))


def _check_schema(manifest: lake.Manifest, schema: pa.Schema) -> None:
    declared = lake.schema_types(schema)
    if manifest.schema == declared:
        return
    diffs = [
        f"{c}: lake {manifest.schema.get(c, '-')} vs config {declared.get(c, '-')}"
        for c in sorted(set(manifest.schema) | set(declared))
        if manifest.schema.get(c) != declared.get(c)
    ]
    raise ConfigError(
        f"source.columns: dataset {manifest.dataset!r} was written with another schema; " + "; ".join(diffs)
    )


@emits("ingest")
def ingest(
    config: Config,
    storage: Storage,
    *,
    source_uri: str | None = None,
    s3: Minio | None = None,
    run_id: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    policy: lake_commit.CommitPolicy | None = None,
) -> IngestResult:
    """Ingest ``source_uri`` (default: ``config.source.uri``) into the lake dataset of the config.

    Rows newer than the committed watermark are added, and so are new rows up to ``source.allowed_lateness``
    before it (late data, label updates); rows already in the lake are skipped, older new rows are kept aside
    as too late (``kfloop.late_rows``); unparsable rows go to quarantine with reasons, once. Nothing becomes
    visible until the manifest commit at the end. Overlapping runs are safe: each stages its files under its
    run id with no lock held and merges them into the current manifest under the dataset's lease (``policy``
    sets how long it waits and when a silent run counts as dead).

    A ``source.replace`` dataset (a snapshot table) is the file: a file whose bytes differ from the current
    version's replaces the whole dataset with its rows (no watermark, no late or skipped rows; the files it
    replaces are retired, readable for the grace period), so changed keys change, removed keys go and an
    older file ingested again is the table again. The current version's bytes again are already ingested.
    """
    src = config.source
    uri = source_uri or src.uri
    run_id = run_id or new_run_id()
    started, t0 = datetime.now(UTC).isoformat(), time.perf_counter()
    schema = arrow_schema(src)
    manifest = lake.read_manifest(storage, src.dataset) or lake.new_manifest(src.dataset, schema)
    _check_schema(manifest, schema)
    watermark_before = manifest.watermark
    side = {
        layout.quarantine_prefix(src.dataset) + "/": _committed_quarantine,
        layout.too_late_prefix(src.dataset) + "/": _committed_too_late,
    }

    with (
        lake_commit.transaction(storage, src.dataset, run_id, policy=policy, side=side) as txn,
        tempfile.TemporaryDirectory(prefix="kfloop-ingest-") as tmp,
    ):
        local = fetch_to_local(uri, Path(tmp), s3=s3)
        digest = file_sha256(local)
        result = functools.partial(
            _result, run_id=run_id, uri=uri, digest=digest, started=started, t0=t0, storage=storage
        )
        if _ingested(manifest, digest, src):
            return result(manifest=manifest, already=True)
        observed, schema_changes = _schema_changes(config, local, uri, manifest)
        late = (
            _Replacing(manifest)
            if src.replace
            else LakeRows(storage, manifest, schema, src.timestamp_column, src.allowed_lateness)
        )
        erased = TombstoneFilter(storage, entity_keys(config))
        counts, files, quarantine_uri = _load(
            config, storage, local, uri, run_id, late, Path(tmp), txn, on_batch, erased
        )
        counts["erased"] = erased.dropped
        run = {
            "run_id": run_id,
            "source": uri,
            "source_sha256": digest,
            "started": started,
            "finished": datetime.now(UTC).isoformat(),
            "rows_read": counts["read"],
            "rows_written": counts["written"],
            "rows_quarantined": counts["quarantined"],
            "rows_skipped": counts["skipped"],
            "rows_late": counts["late"],
            "rows_too_late": counts["too_late"],
            "rows_erased": counts["erased"],
            "files": [f.key for f in files],
            "quarantine": layout.quarantine_key(src.dataset, run_id) if quarantine_uri else None,
            "too_late": layout.too_late_key(src.dataset, run_id) if counts["too_late"] else None,
            "allowed_lateness": src.allowed_lateness,
            "replace": src.replace,
            "watermark_before": watermark_before,
            "source_columns": observed,
            "schema_changes": [asdict(c) for c in schema_changes],
        }

        def update(current: lake.Manifest) -> lake.Manifest | None:
            """Merge into the manifest as it is now: a concurrent run may have committed since we read it.
            Rows this run kept by the (older) watermark all land; dedup by keys is validate's job. A replacing
            run's files become the whole dataset: of overlapping runs, the last to commit is the version."""
            if _ingested(current, digest, src) or (not src.replace and _read_meanwhile(manifest, current, digest)):
                return None
            _check_schema(current, schema)
            erased.check_unchanged(src.dataset)
            return (lake_commit.replaced if src.replace else lake_commit.appended)(current, files, run)

        committed = txn.commit(update, lake.new_manifest(src.dataset, schema))
        if not txn.committed:  # a concurrent run ingested the same bytes first
            return result(manifest=committed, already=True)
        audit_events.ingest_commit(storage, src.dataset, run, Path(tmp) / "quarantine.parquet")  # once per commit
    return result(manifest=committed, run=run, quarantine_uri=quarantine_uri)


def _ingested(manifest: lake.Manifest, digest: str, src: SourceConfig) -> bool:
    """Whether these bytes are in the dataset. A replacing source (a snapshot table): they are the current
    version's (an older version's bytes are that version again). Appending: a run already read them with at
    least this ``allowed_lateness`` (after raising it, the same file is read again so its too-late rows now
    inside the window are taken; rows already in the lake are skipped by content)."""
    if src.replace:
        current = next((r for r in reversed(manifest.runs) if "source_sha256" in r), None)
        return current is not None and current["source_sha256"] == digest
    wanted = parse_duration(src.allowed_lateness)
    return any(
        r.get("source_sha256") == digest and parse_duration(r.get("allowed_lateness") or "0s") >= wanted
        for r in manifest.runs
    )


def _read_meanwhile(before: lake.Manifest, current: lake.Manifest, digest: str) -> bool:
    """Whether another run committed these bytes since this one split its rows against ``before`` (under a
    narrower lateness): this run's split no longer knows which rows are in the lake, so it commits nothing;
    run it again to take the rows its wider lateness adds."""
    seen = {r.get("run_id") for r in before.runs}
    return any(r.get("source_sha256") == digest and r.get("run_id") not in seen for r in current.runs)


class _Replacing:
    """The arrival split of a replacing ingest: every cast row is kept (the file is the whole dataset)."""

    def __init__(self, manifest: lake.Manifest) -> None:
        self.manifest = manifest

    def split(self, good: pa.Table) -> LateSplit:
        return LateSplit(keep=good, late=0, skipped=0, too_late=good.slice(0, 0))

    def too_late_table(self, rows: pa.Table, uri: str) -> pa.Table:  # never called: nothing is too late
        raise AssertionError("a replacing ingest keeps every row")


def _committed_quarantine(manifest: lake.Manifest) -> set[str]:
    return {r["quarantine"] for r in manifest.runs if r.get("quarantine")}


def _committed_too_late(manifest: lake.Manifest) -> set[str]:
    return {r["too_late"] for r in manifest.runs if r.get("too_late")}


def _load(
    config: Config,
    storage: Storage,
    local: Path,
    uri: str,
    run_id: str,
    late: LakeRows | _Replacing,
    tmp: Path,
    txn: lake_commit.Transaction,
    on_batch: Callable[[int], None] | None,
    erased: TombstoneFilter,
) -> tuple[dict[str, int], list[lake.DataFile], str | None]:
    """Stream, cast, split by arrival (``kfloop.late_rows``) and stage the rows; returns counts, stored files,
    quarantine URI. Too-late rows go to their own side file; bad rows a committed run quarantined are skipped;
    rows of erased entities (``kfloop forget``'s tombstones) are dropped first, good or bad, and only counted."""
    src = config.source
    schema = arrow_schema(src)
    required = (src.timestamp_column, *src.entity_keys)
    writer = lake.PartitionWriter(src.dataset, schema, src.timestamp_column, run_id, src.batch_rows * 4)
    qpath = tmp / "quarantine.parquet"
    qwriter: pq.ParquetWriter | None = None
    lpath, lwriter = tmp / "too_late.parquet", None
    counts = {"read": 0, "written": 0, "quarantined": 0, "skipped": 0, "late": 0, "too_late": 0}
    seen = SideRows(storage, late.manifest, "quarantine")
    try:
        for raw in iter_batches(local, src, display=uri):
            result = cast_and_derive(raw.table, src, raw.rows, required)
            counts["read"] += raw.table.num_rows + len(raw.rejects)
            good, bad = erased.keep(result.good), erased.keep(result.bad)
            rejects = [r for r in raw.rejects if not erased.erased_text(r.text)]
            split = late.split(good)
            good = split.keep
            counts["skipped"] += split.skipped
            counts["late"] += split.late
            if split.too_late.num_rows:
                t = late.too_late_table(split.too_late, uri)
                lwriter = lwriter or pq.ParquetWriter(lpath, t.schema, compression="zstd")
                lwriter.write_table(t)
                counts["too_late"] += t.num_rows
            writer.add(good)
            counts["written"] += good.num_rows
            q = _quarantine_table(bad, rejects, schema, uri)
            if q is not None:
                fresh = seen.fresh(q)
                counts["skipped"] += q.num_rows - fresh.num_rows
                q = fresh if fresh.num_rows else None
            if q is not None:
                qwriter = qwriter or pq.ParquetWriter(qpath, q.schema, compression="zstd")
                qwriter.write_table(q)
                counts["quarantined"] += q.num_rows
            if on_batch:
                on_batch(counts["read"])
        files = writer.store(storage)
        txn.stage(*(f.key for f in files))
        if lwriter is not None:
            lwriter.close()
            txn.stage(layout.too_late_key(src.dataset, run_id))
            storage.upload_file(lpath, layout.too_late_key(src.dataset, run_id))
        if qwriter is None:
            return counts, files, None
        qwriter.close()
        txn.stage(layout.quarantine_key(src.dataset, run_id))
        storage.upload_file(qpath, layout.quarantine_key(src.dataset, run_id))
        return counts, files, storage.uri(layout.quarantine_key(src.dataset, run_id))
    finally:
        writer.close()


def _schema_changes(
    config: Config, local: Path, uri: str, manifest: lake.Manifest
) -> tuple[dict[str, str | None], list[SchemaChange]]:
    """Compare the file's columns to the contract (breaking changes stop here, each named) and to the
    last accepted source file (reported only)."""
    src = config.source
    fmt = detect_format(local, src.format, uri)
    observed = observe(local, fmt, src, uri)
    if not observed and fmt == "jsonl":  # no JSON object to judge the columns by: every line is quarantined
        return observed, []
    declared = {c: t.value for c, t in src.file_columns.items()}
    changes = diff_schema(observed, declared, config.contract.schema_changes)
    breaking = [c for c in changes if c.breaking]
    if breaking:
        raise SchemaChangeError(f"{uri}: breaking schema change: {describe(breaking)}")
    accepted = next((r["source_columns"] for r in reversed(manifest.runs) if r.get("source_columns")), None)
    if accepted is not None:
        seen = {(c.change, c.column) for c in changes}
        changes += [c for c in drift_from_accepted(observed, accepted) if (c.change, c.column) not in seen]
    return observed, changes


def _result(
    *,
    run_id: str,
    uri: str,
    digest: str,
    manifest: lake.Manifest,
    started: str,
    t0: float,
    storage: Storage,
    already: bool = False,
    run: dict | None = None,
    quarantine_uri: str | None = None,
) -> IngestResult:
    run = run or {}
    return IngestResult(
        run_id=run_id,
        dataset=manifest.dataset,
        source=uri,
        source_sha256=digest,
        rows_read=run.get("rows_read", 0),
        rows_written=run.get("rows_written", 0),
        rows_quarantined=run.get("rows_quarantined", 0),
        rows_skipped=run.get("rows_skipped", 0),
        already_ingested=already,
        files=len(run.get("files", [])),
        watermark_before=run.get("watermark_before", manifest.watermark),
        watermark_after=manifest.watermark,
        dataset_rows=manifest.rows,
        schema_hash=manifest.schema_hash,
        content_hash=manifest.content_hash,
        quarantine_uri=quarantine_uri,
        manifest_uri=storage.uri(layout.manifest_key(manifest.dataset)),
        started=started,
        seconds=round(time.perf_counter() - t0, 3),
        rows_late=run.get("rows_late", 0),
        rows_too_late=run.get("rows_too_late", 0),
        too_late_uri=storage.uri(run["too_late"]) if run.get("too_late") else None,
        rows_erased=run.get("rows_erased", 0),
    )


def full_quarantine_schema(schema: pa.Schema) -> pa.Schema:
    """Layout of a quarantine file: source columns as text, then row, reason, raw record, source URI."""
    extra = [pa.field(RAW_COLUMN, pa.string()), pa.field(SOURCE_COLUMN, pa.string())]
    return pa.schema([*quarantine_schema(schema), *extra])


def run_ingest_step(
    config_json: str, source_uri: str, run_manifest_path: str, quarantine_path: str, table: str = ""
) -> IngestResult:
    """Entrypoint inside the pipeline step: resolve storage from the config, ingest, write artifacts. ``table``:
    an attribute table of ``features.tables`` instead of the main source ("")."""
    import json

    from kfloop.step import open_step
    from kfloop.storage import S3Storage

    config, storage = open_step(config_json, table)
    if not table:  # the main source's ingest starts every pipeline run: the one place a config change is seen
        from kfloop.audit.config_change import record_config_change

        record_config_change(storage, config)
    s3 = storage.client if isinstance(storage, S3Storage) else None
    result = ingest(config, storage, source_uri=source_uri or None, s3=s3)
    Path(run_manifest_path).write_text(json.dumps(result.to_dict(), indent=2))
    if result.quarantine_uri:
        storage.download_file(layout.quarantine_key(result.dataset, result.run_id), Path(quarantine_path))
    else:
        pq.write_table(full_quarantine_schema(arrow_schema(config.source)).empty_table(), quarantine_path)
    return result
