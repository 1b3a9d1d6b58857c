"""Late rows at ingest: tell rows already in the lake from late ones, and late ones from too-late ones.

Why: a watermark alone cannot tell a row re-sent in an overlapping file (already ingested: skip it) from a
row that arrived late or a label that became known later (new content: keep it). So rows at or before the
watermark are compared by content with the committed lake files of the same event times (read lazily, row
hashes only): equal rows are skipped; new ones are accepted while their event time is within
``source.allowed_lateness`` of the watermark, and the rest are kept aside as too late, with the reason,
counted and reported. Bad rows get the same treatment: a row already in a committed quarantine file is
not quarantined again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.cast import REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN
from kfloop.config.contract import parse_duration
from kfloop.row_hash import row_hashes
from kfloop.storage import Storage

__all__ = ["LakeRows", "LateSplit", "SideRows"]

#: Reason written beside each too-late row in its side file.
TOO_LATE_REASON = "too late: event time {ts} is before the watermark {wm} minus source.allowed_lateness {lateness}"

#: Columns of a side file that say where and why, not what: a re-sent row differs in them.
_NOT_CONTENT = frozenset({ROW_COLUMN, REASON_COLUMN, SOURCE_COLUMN})


@dataclass(frozen=True)
class LateSplit:
    """One batch split by arrival: what to write, what was there already, what came too late."""

    keep: pa.Table  # new rows: after the watermark, or late within the allowed lateness
    late: int  # of ``keep``: rows at or before the watermark (late data, label updates)
    skipped: int  # rows equal to a committed lake row (already ingested) or too-late row (already reported)
    too_late: pa.Table  # new rows older than watermark - allowed lateness


class LakeRows:
    """Row hashes of the committed lake files, loaded per file as event times ask for them."""

    def __init__(
        self, storage: Storage, manifest: lake.Manifest, schema: pa.Schema, timestamp_column: str, lateness: str
    ) -> None:
        self.storage, self.manifest, self.schema, self.ts = storage, manifest, schema, timestamp_column
        self.files = list(manifest.files)
        self.lateness, self.watermark_text = lateness, manifest.watermark
        kind = schema.field(timestamp_column).type
        wm = datetime.fromisoformat(manifest.watermark) if manifest.watermark else None
        self.watermark = pa.scalar(wm, kind) if wm else None
        self.cutoff = pa.scalar(wm - parse_duration(lateness), kind) if wm else None
        self.aside = SideRows(storage, manifest, "too_late")
        self._loaded: set[str] = set()
        self._hashes = np.empty(0, np.uint64)

    def _load(self, lo: datetime, hi: datetime) -> None:
        new = [
            f
            for f in self.files
            if f.key not in self._loaded
            and datetime.fromisoformat(f.min_event_time) <= hi
            and datetime.fromisoformat(f.max_event_time) >= lo
        ]
        if not new:
            return
        parts = [self._hashes]
        for f in new:
            table = pq.read_table(pa.BufferReader(self.storage.read_bytes(f.key)), columns=self.schema.names)
            parts.append(row_hashes(table.cast(self.schema)))
            self._loaded.add(f.key)
        self._hashes = np.unique(np.concatenate(parts))

    def seen(self, table: pa.Table) -> np.ndarray:
        """Per row of ``table``: whether the lake already holds an equal row."""
        if table.num_rows == 0:
            return np.zeros(0, dtype=bool)
        ts = table.column(self.ts)
        self._load(pc.min(ts).as_py(), pc.max(ts).as_py())
        return np.isin(row_hashes(table), self._hashes)

    def split(self, good: pa.Table) -> LateSplit:
        """Split cast rows by the watermark and the lateness cutoff (``watermark - allowed_lateness``)."""
        empty = good.slice(0, 0)
        if self.watermark is None or good.num_rows == 0:
            return LateSplit(good, 0, 0, empty)
        ts = good.column(self.ts)
        newer = np.asarray(pc.greater(ts, self.watermark).fill_null(False))
        if newer.all():
            return LateSplit(good, 0, 0, empty)
        old = good.filter(pa.array(~newer))
        fresh = ~self.seen(old)
        in_window = np.asarray(pc.greater(old.column(self.ts), self.cutoff).fill_null(False))
        late = old.filter(pa.array(fresh & in_window))
        keep = pa.concat_tables([good.filter(pa.array(newer)), late])
        too_late = old.filter(pa.array(fresh & ~in_window))
        new_too_late = self.aside.fresh(too_late)
        skipped = int((~fresh).sum()) + too_late.num_rows - new_too_late.num_rows
        return LateSplit(keep, late.num_rows, skipped, new_too_late)

    def too_late_table(self, rows: pa.Table, source: str) -> pa.Table:
        """Too-late rows as they were read, with the reason and the source URI (nothing is lost)."""
        reasons = [
            TOO_LATE_REASON.format(ts=t.isoformat(), wm=self.watermark_text, lateness=self.lateness)
            for t in rows.column(self.ts).to_pylist()
        ]
        return rows.append_column(REASON_COLUMN, pa.array(reasons, pa.string())).append_column(
            SOURCE_COLUMN, pa.array([source] * rows.num_rows, pa.string())
        )


class SideRows:
    """Hashes of the rows in committed side files (quarantine, too late; read on first use): a re-sent row
    already set aside is not set aside twice. Compared by content (for quarantine: the column texts and the
    raw record), not by row number, reason or source file."""

    def __init__(self, storage: Storage, manifest: lake.Manifest, field: str) -> None:
        self.storage = storage
        self.keys = [r[field] for r in manifest.runs if r.get(field)]
        self._hashes: np.ndarray | None = None

    @staticmethod
    def _content(table: pa.Table) -> pa.Table:
        return table.select(sorted(c for c in table.column_names if c not in _NOT_CONTENT))

    def _load(self) -> np.ndarray:
        parts = [np.empty(0, np.uint64)]
        for key in self.keys:
            if self.storage.exists(key):
                parts.append(row_hashes(self._content(pq.read_table(pa.BufferReader(self.storage.read_bytes(key))))))
        return np.unique(np.concatenate(parts))

    def fresh(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` no committed run set aside (repeats within one file all stay)."""
        if not self.keys or table.num_rows == 0:
            return table
        if self._hashes is None:
            self._hashes = self._load()
        return table.filter(pa.array(~np.isin(row_hashes(self._content(table)), self._hashes)))
