"""The two passes of contract enforcement over a lake dataset, batch by batch (bounded memory).

Pass 1 (:func:`scan`) runs only when the contract declares duplicate keys: it reads the keys and the event time
and plans which rows to drop. Pass 2 (:func:`enforce`) reads full rows: completeness, the newest event, the row
checks, and routes each row to the clean writer, the quarantine file, or out as a duplicate. Everything stays in
Arrow and numpy (no pandas, no loop per row), and pass 2 reads the next batch and writes the last one on threads
beside the checks (:mod:`kfloop.contract.overlap`).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.config import Config
from kfloop.contract.checks import RowCheck
from kfloop.contract.duplicates import DuplicateIndex, DuplicateOutcome, DuplicatePlan
from kfloop.contract.overlap import WriteBehind, read_ahead
from kfloop.contract.report import MAX_EXAMPLES, CheckResult
from kfloop.contract.table_checks import required_columns
from kfloop.storage import Storage

REASONS_COLUMN = "_reasons"
CHECK_COLUMN_PREFIX = "_check:"
#: Quarantine reasons of one row are joined with this.
REASONS_SEPARATOR = "; "


def example_columns(config: Config) -> list[str]:
    """Columns that identify a row in examples: dedup keys, then entity keys."""
    keys = config.contract.duplicates.keys if config.contract.duplicates else ()
    return list(dict.fromkeys([*keys, *config.source.entity_keys]))


def _take_examples(table: pa.Table, mask: np.ndarray, cols: list[str], into: list[dict]) -> None:
    """The first offending rows (``mask``) of ``table``, until ``into`` holds :data:`MAX_EXAMPLES`."""
    room = MAX_EXAMPLES - len(into)
    if room <= 0:
        return
    rows = np.flatnonzero(mask)[:room]
    if len(rows):
        into.extend(table.select([c for c in cols if c in table.column_names]).take(pa.array(rows)).to_pylist())


@dataclass
class Scan:
    """What pass 1 learned: the duplicate plan over every row (None without ``contract.duplicates``)."""

    rows_in: int = 0
    plan: DuplicatePlan | None = None


def scan(storage: Storage, manifest: lake.Manifest, config: Config) -> Scan:
    """Pass 1: the duplicate plan, from the key columns and event time only (skipped without duplicate keys)."""
    src, dups = config.source, config.contract.duplicates
    if dups is None:
        return Scan()
    index = DuplicateIndex(dups, src.timestamp_column)
    columns = list(dict.fromkeys([*dups.keys, src.timestamp_column]))
    out = Scan()
    with closing(read_ahead(lake.iter_dataset(storage, manifest, src.batch_rows, columns))) as batches:
        for table in batches:
            out.rows_in += table.num_rows
            index.add(table)
    out.plan = index.plan()
    return out


class Tally:
    """Failure counts and examples per row check, accumulated over batches."""

    def __init__(self, checks: list[RowCheck], example_cols: list[str]) -> None:
        self.failed = {c.check: 0 for c in checks}
        self.examples: dict[str, list[dict]] = {c.check: [] for c in checks}
        self.example_cols = example_cols

    def add(self, check: RowCheck, table: pa.Table, mask: np.ndarray) -> None:
        hits = int(np.count_nonzero(mask))
        self.failed[check.check] += hits
        if hits and len(self.examples[check.check]) < MAX_EXAMPLES:
            cols = list(dict.fromkeys([*self.example_cols, *check.columns(table.column_names)]))
            _take_examples(table, mask, cols, self.examples[check.check])

    def result(self, check: RowCheck, rows_in: int) -> CheckResult:
        failed = self.failed[check.check]
        return CheckResult(
            check=check.check,
            kind=check.kind,
            level="row",
            severity=check.severity,  # type: ignore[arg-type]
            passed=failed == 0,
            failed=failed,
            total=rows_in,
            message=check.message,
            column=check.column,
            examples=self.examples[check.check],
        )


@dataclass
class Enforced:
    """What pass 2 did."""

    tally: Tally
    dups: DuplicateOutcome
    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    complete: int = 0  # rows with every completeness column present
    newest: datetime | None = None
    incomplete_examples: list[dict] = field(default_factory=list)
    duplicate_examples: list[dict] = field(default_factory=list)


class _Completeness:
    """Rows with every required column present, the newest event time, examples of incomplete rows."""

    def __init__(self, config: Config) -> None:
        self.required = required_columns(config)
        self.example_cols = [*example_columns(config), *self.required]
        self.ts = config.source.timestamp_column
        self.complete = 0
        self.newest: datetime | None = None
        self.examples: list[dict] = []

    def add(self, table: pa.Table) -> None:
        complete = np.ones(table.num_rows, dtype=bool)
        for col in self.required:
            if table.column(col).null_count:
                complete &= np.asarray(table.column(col).is_valid())
        ok = int(np.count_nonzero(complete))
        self.complete += ok
        if ok < table.num_rows:
            _take_examples(table, ~complete, self.example_cols, self.examples)
        hi = pc.max(table.column(self.ts)).as_py()
        if hi is not None and (self.newest is None or hi > self.newest):
            self.newest = hi


def enforce(
    storage: Storage,
    manifest: lake.Manifest,
    config: Config,
    checks: list[RowCheck],
    scanned: Scan,
    writer: lake.PartitionWriter,
    quarantine_path: Path,
) -> Enforced:
    """Pass 2: row checks; clean rows to ``writer``, quarantine rows (with reasons) to a local file."""
    src = config.source
    qchecks = [c for c in checks if c.severity == "quarantine"]
    ex_cols = example_columns(config)
    tally = Tally(checks, ex_cols)
    seen = _Completeness(config)
    plan = scanned.plan
    dup_examples: list[dict] = []
    quarantine = _QuarantineFile(quarantine_path)
    rows_clean = rows_quarantined = offset = 0
    source = lake.iter_dataset(storage, manifest, src.batch_rows, list(src.columns))
    try:
        with WriteBehind() as behind, closing(read_ahead(source)) as batches:
            for table in batches:
                n = table.num_rows
                seen.add(table)
                drop = plan.drop[offset : offset + n] if plan else np.zeros(n, dtype=bool)
                if plan:
                    plan.count(table, offset)
                    _take_examples(table, drop, [*ex_cols, src.timestamp_column], dup_examples)
                offset += n
                masks = {check.check: check.evaluate(table) for check in checks}
                for check in checks:
                    tally.add(check, table, masks[check.check])
                qmask = np.zeros(n, dtype=bool)
                for check in qchecks:
                    qmask |= masks[check.check]
                qmask &= ~drop
                keep = ~(qmask | drop)
                clean = table if keep.all() else table.filter(pa.array(keep))
                rows_clean += clean.num_rows
                q = quarantine_rows(table, qmask, qchecks, masks) if qmask.any() else None
                rows_quarantined += q.num_rows if q is not None else 0
                behind.submit(lambda clean=clean, q=q: _write(writer, clean, quarantine, q))
    finally:
        quarantine.close()
    dups = plan.outcome() if plan else DuplicateOutcome(0, 0, np.zeros(offset, dtype=bool))
    return Enforced(
        tally,
        dups,
        rows_in=offset,
        rows_clean=rows_clean,
        rows_quarantined=rows_quarantined,
        complete=seen.complete,
        newest=seen.newest,
        incomplete_examples=seen.examples,
        duplicate_examples=dup_examples,
    )


def _write(writer: lake.PartitionWriter, clean: pa.Table, quarantine: _QuarantineFile, q: pa.Table | None) -> None:
    writer.add(clean)
    if q is not None:
        quarantine.write(q)


class _QuarantineFile:
    """The local quarantine Parquet file, created with the first offending rows (none: no file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def write(self, rows: pa.Table) -> None:
        self._writer = self._writer or pq.ParquetWriter(self.path, rows.schema, compression="zstd")
        self._writer.write_table(rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def quarantine_rows(table: pa.Table, qmask: np.ndarray, qchecks: list[RowCheck], masks: dict) -> pa.Table:
    """Offending rows with one reason column per quarantine check (null where it passed) and all reasons."""
    at = np.flatnonzero(qmask)  # few rows: gathering them beats a boolean filter per check
    rows = table.take(pa.array(at))
    no_reason = pa.scalar(None, pa.string())
    reasons = []
    for check in qchecks:
        hit = pa.array(masks[check.check][at])
        rows = rows.append_column(f"{CHECK_COLUMN_PREFIX}{check.check}", pc.if_else(hit, check.message, no_reason))
        reasons.append(pc.if_else(hit, f"{check.check}: {check.message}", no_reason))
    joined = pc.binary_join_element_wise(*reasons, REASONS_SEPARATOR, null_handling="skip")
    return rows.append_column(REASONS_COLUMN, joined)
