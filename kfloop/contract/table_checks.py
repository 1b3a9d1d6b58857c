"""Table-level results of the contract: completeness, row count, freshness, duplicates, schema, and
the rows ingestion could not parse. Each is one :class:`CheckResult` built from pass-level counts."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.cast import reason_causes
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.contract.duplicates import DuplicateOutcome
from kfloop.contract.report import MAX_EXAMPLES, CheckResult, SchemaChange
from kfloop.contract.schema_diff import describe
from kfloop.storage import Storage


def required_columns(config: Config) -> list[str]:
    """Columns completeness counts: the configured ones, else entity keys and event time. Not the label by
    default: labels often arrive late, and an unlabeled row still belongs in the feature history (the
    training-set stage leaves it out and counts it)."""
    src = config.source
    cols = config.contract.completeness.columns
    if cols:
        return list(cols)
    return [*src.entity_keys, src.timestamp_column]


def completeness(config: Config, rows_in: int, complete: int, examples: list[dict]) -> CheckResult:
    c = config.contract.completeness
    ratio = complete / rows_in if rows_in else 1.0
    return CheckResult(
        check="table.completeness",
        kind="completeness",
        level="table",
        severity=c.severity,
        passed=ratio >= c.min_ratio,
        failed=rows_in - complete,
        total=rows_in,
        message=f"at least {c.min_ratio:.2%} of records complete on {', '.join(required_columns(config))}; "
        f"found {ratio:.2%}",
        examples=examples,
    )


def min_rows(config: Config, rows_clean: int) -> CheckResult:
    c = config.contract.min_rows
    return CheckResult(
        check="table.min_rows",
        kind="min_rows",
        level="table",
        severity=c.severity,
        passed=rows_clean >= c.value,
        failed=int(rows_clean < c.value),
        total=1,
        message=f"at least {c.value:,} clean rows; found {rows_clean:,}",
    )


def freshness(config: Config, newest: datetime | None, now: datetime) -> CheckResult:
    fresh = config.contract.freshness
    assert fresh is not None
    age = now - newest if newest else None
    ok = age is not None and age <= parse_duration(fresh.max_age)
    return CheckResult(
        check="table.freshness",
        kind="freshness",
        level="table",
        severity=fresh.severity,
        passed=ok,
        failed=int(not ok),
        total=1,
        message=f"newest event at most {fresh.max_age} old; newest is {newest} ({age} old)",
    )


def duplicates(config: Config, rows_in: int, dups: DuplicateOutcome, examples: list[dict]) -> CheckResult:
    c = config.contract.duplicates
    assert c is not None
    return CheckResult(
        check="table.duplicates",
        kind="duplicates",
        level="row",
        severity="error" if c.mode == "fail" else "warn",
        passed=dups.duplicates == 0,
        failed=dups.duplicates,
        total=rows_in,
        message=f"unique on {', '.join(c.keys)} (mode {c.mode}): {dups.exact:,} exact duplicates, "
        f"{dups.key_conflicts:,} key duplicates with different values",
        examples=examples,
    )


def latest_schema_changes(manifest: lake.Manifest) -> list[SchemaChange]:
    """Schema changes ingestion reported for the newest source file (breaking ones never get this far)."""
    for run in reversed(manifest.runs):
        if "schema_changes" in run:
            return [SchemaChange(**c) for c in run["schema_changes"]]
    return []


def schema(changes: list[SchemaChange]) -> CheckResult:
    return CheckResult(
        check="table.schema",
        kind="schema",
        level="table",
        severity="warn",
        passed=not changes,
        failed=len(changes),
        total=max(1, len(changes)),
        message=describe(changes) if changes else "the source matches the contract and the last accepted file",
    )


def ingest_rejects(storage: Storage, manifest: lake.Manifest) -> tuple[int, CheckResult]:
    """Rows ingestion quarantined (unparsable values, missing keys or event times, malformed records), from
    its quarantine files: they belong in the quality picture even though they never reached the lake. The
    message counts rows per cause (a row failing two ways counts under both)."""
    per_cause: dict[str, int] = {}
    examples: list[dict] = []
    total = 0
    for run in manifest.runs:
        key = run.get("quarantine")
        if not key or not storage.exists(key):
            continue
        table = pq.read_table(pa.BufferReader(storage.read_bytes(key)), columns=["_row", "_reason", "_source"])
        total += table.num_rows
        for reason in table.column("_reason").to_pylist():
            for cause in reason_causes(reason, manifest.schema) if reason else ["unknown"]:
                per_cause[cause] = per_cause.get(cause, 0) + 1
        if len(examples) < MAX_EXAMPLES:
            examples.extend(table.slice(0, MAX_EXAMPLES - len(examples)).to_pylist())
    breakdown = ", ".join(f"{cause} {n:,}" for cause, n in sorted(per_cause.items(), key=lambda kv: -kv[1]))
    result = CheckResult(
        check="ingest.parse",
        kind="type",
        level="row",
        severity="quarantine",
        passed=total == 0,
        failed=total,
        total=total,  # replaced by the caller once rows in are known
        message="required values (event time, entity keys) present, every value parses as its declared type, every "
        "record well-formed" + (f"; rows failing: {breakdown}" if breakdown else ""),
        examples=examples,
    )
    return total, result
