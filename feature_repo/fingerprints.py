"""Fingerprints of the clean rows a feature view was computed from, one per event-date partition.

Why: validate rewrites the whole clean dataset whenever its input or contract changes (new file keys
every time), so neither keys nor the watermark say what changed. The view state keeps, per event date up
to its watermark, a fingerprint of the clean rows it was computed from; the next run compares them with
the clean dataset now. Cheap first: a partition whose file hashes (the lake's ``DataFile.sha256``) are
unchanged is unchanged — ``PartitionWriter`` writes equal content to equal bytes. Only a partition whose
files differ is read, and its rows up to the watermark are compared by an order-independent content
hash: equal (rewritten, or rows appended after the watermark) → unchanged; different or vanished →
changed, and the feature stage recomputes from the earliest changed event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.lake import DataFile, Manifest

__all__ = ["CleanChanges", "Fingerprint", "by_date", "compare", "file_signature", "fingerprint"]


@dataclass(frozen=True)
class Fingerprint:
    """The clean rows of one event date (the view's columns, events up to the view's watermark)."""

    files: str  # hash of the partition's file hashes: unchanged files need no reading
    rows: int
    content: str  # order-independent hash of the rows: compared when the files differ
    min_event_time: str | None  # earliest event: where a recompute starts when the partition changed


@dataclass(frozen=True)
class CleanChanges:
    """What differs between the stored fingerprints and the clean dataset now (up to the watermark)."""

    earliest: datetime | None  # earliest event whose clean rows changed; None: nothing before the watermark did
    changed: tuple[str, ...]  # event dates whose rows changed, appeared or vanished
    unchanged: dict[str, Fingerprint]  # verified fingerprints of the other dates (file hashes refreshed)
    rehashed: int  # dates whose files differed and were read to compare content


def by_date(manifest: Manifest) -> dict[str, list[DataFile]]:
    """The manifest's files grouped by event-date partition."""
    out: dict[str, list[DataFile]] = {}
    for f in manifest.files:
        out.setdefault(f.event_date, []).append(f)
    return out


def file_signature(files: Iterable[DataFile]) -> str:
    return hashlib.sha256("\n".join(sorted(f.sha256 for f in files)).encode()).hexdigest()[:32]


def fingerprint(table: pa.Table, timestamp_column: str, files: str, until: datetime) -> Fingerprint:
    """Fingerprint of ``table``'s rows with an event at or before ``until`` (all columns, any row order)."""
    ts = table.column(timestamp_column)
    rows = table.filter(pc.less_equal(ts, pa.scalar(until, ts.type)))
    hashes = np.sort(pd.util.hash_pandas_object(rows.to_pandas(), index=False).to_numpy(np.uint64))
    content = hashlib.sha256(hashes.tobytes()).hexdigest()[:32]
    first = pc.min(rows.column(timestamp_column)).as_py() if rows.num_rows else None
    return Fingerprint(files, rows.num_rows, content, first.isoformat() if first else None)


def compare(
    stored: Mapping[str, Fingerprint],
    partitions: Mapping[str, list[DataFile]],
    until: datetime,
    read: Callable[[str], pa.Table],
    timestamp_column: str,
) -> CleanChanges:
    """Check every date the view was computed from (and every date now holding rows up to ``until``);
    ``read(date)`` gives a partition's rows, called only where the files differ from the stored ones."""
    dates = set(stored) | {
        d for d, files in partitions.items() if min(datetime.fromisoformat(f.min_event_time) for f in files) <= until
    }
    unchanged: dict[str, Fingerprint] = {}
    changed: list[str] = []
    starts: list[datetime] = []
    rehashed = 0
    for date in sorted(dates):
        files = partitions.get(date, [])
        signature = file_signature(files)
        old = stored.get(date)
        if old is not None and old.files == signature:
            unchanged[date] = old
            continue
        new = fingerprint(read(date), timestamp_column, signature, until) if files else None
        rehashed += bool(files)
        if old is None and (new is None or new.rows == 0):
            continue  # only rows after the watermark: appended, not changed
        if old is not None and new is not None and old.content == new.content:
            unchanged[date] = replace(old, files=signature)  # rewritten with equal content
            continue
        changed.append(date)
        starts += [datetime.fromisoformat(p.min_event_time) for p in (old, new) if p and p.min_event_time]
    return CleanChanges(min(starts, default=None), tuple(changed), unchanged, rehashed)
