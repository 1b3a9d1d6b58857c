"""The two passes of contract enforcement over a lake dataset, batch by batch (bounded memory).

Pass 1 (:func:`scan`) reads only keys, event time and required columns: completeness, freshness and
the duplicate plan. Pass 2 (:func:`enforce`) reads full rows, runs the row checks and routes each row
to the clean writer, the quarantine writer, or out as a duplicate.
"""

from __future__ import annotations

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
from kfloop.contract.report import MAX_EXAMPLES, CheckResult
from kfloop.contract.table_checks import required_columns
from kfloop.storage import Storage

REASONS_COLUMN = "_reasons"


def example_columns(config: Config) -> list[str]:
    """Columns that identify a row in examples: dedup keys, then entity keys."""
    keys = config.contract.duplicates.keys if config.contract.duplicates else ()
    return list(dict.fromkeys([*keys, *config.source.entity_keys]))


def _take_examples(table: pa.Table, mask: np.ndarray, cols: list[str], into: list[dict]) -> None:
    room = MAX_EXAMPLES - len(into)
    if room > 0 and mask.any():
        into.extend(
            table.select([c for c in cols if c in table.column_names]).filter(pa.array(mask)).slice(0, room).to_pylist()
        )


@dataclass
class Scan:
    """What pass 1 learned."""

    rows_in: int = 0
    complete: int = 0
    newest: datetime | None = None
    plan: DuplicatePlan | None = None
    incomplete_examples: list[dict] = field(default_factory=list)


def scan(storage: Storage, manifest: lake.Manifest, config: Config) -> Scan:
    """Pass 1: completeness, newest event, duplicate plan."""
    src, contract = config.source, config.contract
    required = required_columns(config)
    dup_index = DuplicateIndex(contract.duplicates, src.timestamp_column) if contract.duplicates else None
    ex_cols = example_columns(config)
    columns = list(dict.fromkeys([*required, src.timestamp_column, *ex_cols]))
    out = Scan()
    for table in lake.iter_dataset(storage, manifest, src.batch_rows, columns):
        out.rows_in += table.num_rows
        complete = np.ones(table.num_rows, dtype=bool)
        for col in required:
            if table.column(col).null_count:
                complete &= np.asarray(table.column(col).is_valid())
        out.complete += int(complete.sum())
        _take_examples(table, ~complete, [*ex_cols, *required], out.incomplete_examples)
        hi = pc.max(table.column(src.timestamp_column)).as_py()
        if hi is not None and (out.newest is None or hi > out.newest):
            out.newest = hi
        if dup_index:
            dup_index.add(table)
    out.plan = dup_index.plan() if dup_index else None
    return out


class Tally:
    """Failure counts and examples per row check, accumulated over batches."""

    def __init__(self, checks: list[RowCheck], example_cols: list[str]) -> None:
        self.failed = {c.check: 0 for c in checks}
        self.examples: dict[str, list[dict]] = {c.check: [] for c in checks}
        self.example_cols = example_cols

    def add(self, check: RowCheck, table: pa.Table, mask: np.ndarray) -> None:
        self.failed[check.check] += int(mask.sum())
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
    rows_clean: int = 0
    rows_quarantined: int = 0
    duplicate_examples: list[dict] = field(default_factory=list)


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
    schema_names = list(src.columns)
    qchecks = [c for c in checks if c.severity == "quarantine"]
    ex_cols = example_columns(config)
    tally = Tally(checks, ex_cols)
    plan = scanned.plan
    dup_examples: list[dict] = []
    qwriter: pq.ParquetWriter | None = None
    rows_clean = rows_quarantined = offset = 0
    for table in lake.iter_dataset(storage, manifest, src.batch_rows, schema_names):
        n = table.num_rows
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
        clean = table.filter(pa.array(~qmask & ~drop))
        writer.add(clean)
        rows_clean += clean.num_rows
        if qmask.any():
            q = quarantine_rows(table, qmask, qchecks, masks)
            qwriter = qwriter or pq.ParquetWriter(quarantine_path, q.schema, compression="zstd")
            qwriter.write_table(q)
            rows_quarantined += q.num_rows
    if qwriter is not None:
        qwriter.close()
    dups = plan.outcome() if plan else DuplicateOutcome(0, 0, np.zeros(scanned.rows_in, dtype=bool))
    return Enforced(tally, dups, rows_clean, rows_quarantined, dup_examples)


def quarantine_rows(table: pa.Table, qmask: np.ndarray, qchecks: list[RowCheck], masks: dict) -> pa.Table:
    """Offending rows with one reason column per quarantine check (null where it passed) and all reasons."""
    rows = table.filter(pa.array(qmask))
    reasons_per_row: list[list[str]] = [[] for _ in range(rows.num_rows)]
    for check in qchecks:
        hit = masks[check.check][qmask]
        col = [check.message if h else None for h in hit]
        for i in np.flatnonzero(hit):
            reasons_per_row[i].append(f"{check.check}: {check.message}")
        rows = rows.append_column(f"_check:{check.check}", pa.array(col, pa.string()))
    return rows.append_column(REASONS_COLUMN, pa.array(["; ".join(r) for r in reasons_per_row], pa.string()))
