"""``kfloop retention apply``: everything past its period of ``governance.retention`` goes, then one audit record.

Each kind of data is handled by its owner's rules (:mod:`.lake_trim` for the lake, :mod:`.files` for the rest); a
kind whose period is null is left alone. The run is idempotent (what is gone stays gone; a second run removes only
what aged past the cutoff since) and a dry run reads the same plan and removes nothing. The audit record
(``retention.apply``) holds the counts per dataset, so "was the policy enforced, and what did it remove?" has an
answer in the tamper-evident trail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from kfloop import audit, lake_commit, layout
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.retention import files
from kfloop.retention.lake_trim import trim
from kfloop.step import new_run_id
from kfloop.storage import Storage

__all__ = ["Removed", "RetentionResult", "apply_retention", "lake_datasets"]


@dataclass(frozen=True)
class Removed:
    """What one dataset lost (or would lose, in a dry run)."""

    kind: str  # lake | inference_log | training_sets | reports | quarantine | monitoring
    dataset: str
    period: str
    cutoff: str
    rows: int | None  # None: a kind kept as files, counted in files only
    files: int
    kept: list[str] = field(default_factory=list)  # past the period but kept, e.g. a champion's training set


@dataclass(frozen=True)
class RetentionResult:
    run_id: str
    dry_run: bool
    removed: list[Removed]
    audit: dict | None  # the record appended (None in a dry run, or with no period set)


def lake_datasets(config: Config) -> list[tuple[str, str]]:
    """(dataset, event-time column) of every lake dataset retention trims: the source and each attribute table
    with a time column, each followed by its clean dataset. Snapshot tables have no event time: never trimmed."""
    out = [(config.source.dataset, config.source.timestamp_column)]
    out += [(t.name, t.timestamp_column) for t in config.features.tables if not t.snapshot]
    return [pair for name, ts in out for pair in ((name, ts), (layout.clean_dataset(name), ts))]


def apply_retention(
    config: Config,
    storage: Storage,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    policy: lake_commit.CommitPolicy | None = None,
) -> RetentionResult:
    """Remove what is older than each period (counted back from ``now``) and audit it (not in a dry run)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    run_id = new_run_id()
    periods = config.governance.retention.periods()
    sources = [config.source.dataset, *(t.name for t in config.features.tables)]
    removed: list[Removed] = []

    def add(kind: str, dataset: str, rows: int | None, count: int, kept: list[str] | None = None) -> None:
        period = periods[kind] or ""
        cutoff = now - parse_duration(period)
        removed.append(Removed(kind, dataset, period, cutoff.isoformat(), rows, count, kept or []))

    def cutoff(kind: str) -> datetime | None:
        return None if periods[kind] is None else now - parse_duration(periods[kind])

    if (at := cutoff("lake")) is not None:
        for dataset, ts in lake_datasets(config):
            t = trim(storage, dataset, ts, at, run_id, dry_run=dry_run, policy=policy)
            add("lake", dataset, t.rows, t.files + t.rewritten)
    if (at := cutoff("inference_log")) is not None:
        rows, count = files.inference_log(storage, config, at, dry_run)
        add("inference_log", config.training.model_name, rows, count)
    if (at := cutoff("training_sets")) is not None:
        count, kept = files.training_sets(storage, config, at, dry_run)
        add("training_sets", config.features.service, None, count, kept)
    if (at := cutoff("reports")) is not None:
        for prefix in files.report_prefixes(config, sources):
            add("reports", prefix, None, files.by_id(storage, [prefix], at, dry_run))
    if (at := cutoff("quarantine")) is not None:
        for prefix in files.quarantine_prefixes(sources):
            add("quarantine", prefix, None, files.by_id(storage, [prefix], at, dry_run))
    if (at := cutoff("monitoring")) is not None:
        add("monitoring", config.training.model_name, None, files.monitoring(storage, config, at, dry_run))
    record = None
    if not dry_run and removed:  # with no period set nothing was applied: nothing to record
        subject = {"datasets": sorted({f"{r.kind}:{r.dataset}" for r in removed})}
        details = {
            "run_id": run_id,
            "periods": {k: v for k, v in periods.items() if v is not None},
            "counts": {f"{r.kind}:{r.dataset}": {"rows": r.rows, "files": r.files} for r in removed},
            "kept": {f"{r.kind}:{r.dataset}": r.kept for r in removed if r.kept},
        }
        record = audit.append(storage, "retention.apply", subject, details)
    return RetentionResult(run_id, dry_run, removed, record)


def result_json(result: RetentionResult) -> dict:
    """The result as JSON-able data (``kfloop retention apply --json``)."""
    return {"run_id": result.run_id, "dry_run": result.dry_run, "removed": [asdict(r) for r in result.removed]}
