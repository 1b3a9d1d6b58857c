"""Retention of a lake dataset: rows older than the cutoff leave through the lake's own commit.

Whole files past the cutoff leave the manifest; the one file per partition that straddles it is rewritten with
its newer rows only (staged under this run's id, outside the lease). The commit re-reads the manifest under the
dataset's lease (:mod:`kfloop.lake_commit`), so an ingest that committed meanwhile keeps its files: a file of it
that is wholly past the cutoff goes too, a straddling one waits for the next run. Files that leave are *retired*,
as a recompute retires them: readers holding the previous manifest can finish, and the sweep of a later commit
(``CommitPolicy.retire_grace_s`` on; the next retention run commits when one is due) deletes them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import lake, lake_commit, layout
from kfloop.storage import Storage


@dataclass(frozen=True)
class Trimmed:
    """What left one dataset (or would leave it, in a dry run)."""

    rows: int
    files: int  # files that left whole
    rewritten: int  # files at the boundary rewritten with their newer rows


def _time(iso: str) -> datetime:
    at = datetime.fromisoformat(iso)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def plan(manifest: lake.Manifest, cutoff: datetime) -> tuple[list[lake.DataFile], list[lake.DataFile]]:
    """(files wholly older than ``cutoff``, files straddling it): the rest are kept as they are."""
    old = [f for f in manifest.files if _time(f.max_event_time) < cutoff]
    straddle = [f for f in manifest.files if _time(f.min_event_time) < cutoff <= _time(f.max_event_time)]
    return old, straddle


def _rewrite(
    storage: Storage, dataset: str, f: lake.DataFile, ts: str, cutoff: datetime, run_id: str, n: int, tmp: Path
) -> tuple[lake.DataFile, int]:
    """``f`` with its rows at or after ``cutoff`` only, stored under this run's name; (new file, rows removed)."""
    local = storage.local_path(f.key)
    if local is None:
        local = tmp / f"in-{n}.parquet"
        storage.download_file(f.key, local)
    table = pq.read_table(local)
    column = table.column(ts)
    kept = table.filter(pc.greater_equal(column, pa.scalar(cutoff, column.type)))
    out = tmp / f"out-{n}.parquet"
    pq.write_table(kept, out, compression="zstd")
    key = layout.part_key(dataset, f.event_date, run_id, n)
    lo, hi = pc.min(kept.column(ts)).as_py(), pc.max(kept.column(ts)).as_py()
    new = lake.store_part(storage, out, key, f.event_date, run_id, kept.num_rows, lo, hi)
    return new, table.num_rows - kept.num_rows


def trim(
    storage: Storage,
    dataset: str,
    timestamp_column: str,
    cutoff: datetime,
    run_id: str,
    *,
    dry_run: bool = False,
    policy: lake_commit.CommitPolicy | None = None,
) -> Trimmed:
    """Remove ``dataset``'s rows with an event time before ``cutoff`` (see the module doc)."""
    manifest = lake.read_manifest(storage, dataset)
    if manifest is None:
        return Trimmed(0, 0, 0)
    old, straddle = plan(manifest, cutoff)
    if dry_run:
        rows = sum(f.rows for f in old) + sum(_older_rows(storage, f, timestamp_column, cutoff) for f in straddle)
        return Trimmed(rows, len(old), len(straddle))
    now = datetime.now(UTC)
    grace = (policy or lake_commit.CommitPolicy()).retire_grace_s
    expired = any((now - _time(r.retired_at)).total_seconds() > grace for r in manifest.retired)
    if not old and not straddle and not expired:
        return Trimmed(0, 0, 0)  # nothing to remove, nothing retired to sweep: no commit, no run record
    counts = {"rows": 0, "files": 0, "rewritten": 0}
    with (
        lake_commit.transaction(storage, dataset, run_id, policy=policy) as txn,
        tempfile.TemporaryDirectory(prefix="kfloop-retention-") as tmp,
    ):
        rewrites: dict[str, tuple[lake.DataFile, int]] = {}
        for n, f in enumerate(straddle):
            new, removed = _rewrite(storage, dataset, f, timestamp_column, cutoff, run_id, n, Path(tmp))
            txn.stage(new.key)
            rewrites[f.key] = (new, removed)

        def update(current: lake.Manifest) -> lake.Manifest:
            files, gone = [], []
            rows = whole = rewritten = 0
            for f in current.files:
                if _time(f.max_event_time) < cutoff:
                    gone.append(f)
                    rows, whole = rows + f.rows, whole + 1
                elif f.key in rewrites:
                    new, removed = rewrites[f.key]
                    gone.append(f)
                    if new.rows:
                        files.append(new)
                    rows, rewritten = rows + removed, rewritten + 1
                else:
                    files.append(f)
            counts.update(rows=rows, files=whole, rewritten=rewritten)
            at = lake.now_iso()
            run = {"run_id": run_id, "kind": "retention", "cutoff": cutoff.isoformat(), "rows_removed": rows}
            run["finished"] = at
            retired = [*current.retired, *(lake.RetiredFile(f.key, at) for f in gone)]
            return dataclasses.replace(current, files=files, runs=[*current.runs, run], retired=retired)

        txn.commit(update, manifest)
    return Trimmed(counts["rows"], counts["files"], counts["rewritten"])


def _older_rows(storage: Storage, f: lake.DataFile, ts: str, cutoff: datetime) -> int:
    """How many of a straddling file's rows are before ``cutoff`` (what a dry run reports)."""
    table = pq.read_table(pa.BufferReader(storage.read_bytes(f.key)), columns=[ts])
    column = table.column(ts)
    return int(pc.sum(pc.less(column, pa.scalar(cutoff, column.type))).as_py() or 0)
