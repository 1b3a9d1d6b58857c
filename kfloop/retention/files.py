"""Retention of what is stored as one object per run, check or hour: past the cutoff, the object goes.

Ages come from the names stages give (time-sortable run, report and check ids; ``<hour>`` folders of minute
samples), never from storage timestamps a copy or restore would reset. Pointers (``latest.json``,
``latest.prom``) always stay. The inference log is the exception that holds rows: its date partitions before the
cutoff's day go whole, and the files of that day are rewritten (atomically, same key) with their newer rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import layout
from kfloop.config import Config
from kfloop.report.collect import id_time
from kfloop.storage import Storage

_HOUR = timedelta(hours=1)


def _stem(key: str) -> str:
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def _delete(storage: Storage, keys: list[str], dry_run: bool) -> int:
    if not dry_run:
        for key in keys:
            storage.delete(key)
    return len(keys)


def by_id(storage: Storage, prefixes: Iterable[str], cutoff: datetime, dry_run: bool) -> int:
    """Objects directly under ``prefixes`` whose name is a time-sortable id older than ``cutoff``."""
    doomed = []
    for prefix in prefixes:
        for key in storage.list(prefix + "/"):
            at = id_time(_stem(key))
            if "/" not in key[len(prefix) + 1 :] and at is not None and at < cutoff:
                doomed.append(key)
    return _delete(storage, doomed, dry_run)


def by_hour(storage: Storage, prefixes: Iterable[str], cutoff: datetime, dry_run: bool) -> int:
    """Minute samples under ``<prefix>/<hour>/``: an hour goes once all of it is older than ``cutoff``."""
    doomed = []
    for prefix in prefixes:
        for key in storage.list(prefix + "/"):
            hour = key[len(prefix) + 1 :].split("/", 1)[0]
            try:
                start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
            except ValueError:
                continue
            if start + _HOUR <= cutoff:
                doomed.append(key)
    return _delete(storage, doomed, dry_run)


def quarantine_prefixes(datasets: Iterable[str]) -> list[str]:
    """Where a dataset's quarantined rows are: unreadable at ingest, too late, failing the contract."""
    return [layout.quarantine_prefix(n) for d in datasets for n in sorted(layout.dataset_names(d))]


def report_prefixes(config: Config, datasets: Iterable[str]) -> list[str]:
    model = config.training.model_name
    periodic = layout.periodic_report_prefix(model)
    return [*(layout.report_prefix(d) for d in datasets), periodic, f"{periodic}/deliveries"]


def monitoring(storage: Storage, config: Config, cutoff: datetime, dry_run: bool) -> int:
    """Drift checks and their Evidently files (by check id), request and freshness samples (by hour)."""
    model = config.training.model_name
    files = by_id(storage, [layout.drift_checks_prefix(model), layout.drift_snapshots_prefix(model)], cutoff, dry_run)
    views = [v.name for v in config.features.views] + [t.name for t in config.features.tables]
    hourly = [layout.request_samples_prefix(model), *(layout.freshness_prefix(v) for v in views)]
    return files + by_hour(storage, hourly, cutoff, dry_run)


def protected_training_sets(storage: Storage, config: Config) -> set[str]:
    """Runs never removed: the newest set (the next train step reads it) and the sets of the champion, every
    candidate and the version a rollback would restore (their lineage and reference stay answerable)."""
    from kfloop.registry import ModelRegistry

    keep = set()
    try:
        latest = json.loads(storage.read_text(layout.latest_key(layout.training_set_prefix(config.features.service))))
        keep.add(str(latest.get("run_id")))
    except FileNotFoundError:
        pass
    registry = ModelRegistry(storage, config.training.model_name)
    history = registry.history()
    promoted = [h for h in history if h.get("event") in ("promoted", "rolled back")]
    target = promoted[-1].get("previous") if promoted else None
    for mv in registry.list():
        if mv.stage in ("champion", "candidate") or mv.version == target:
            keep.add(str((mv.card.get("training_set") or {}).get("run_id")))
    return keep


def training_sets(storage: Storage, config: Config, cutoff: datetime, dry_run: bool) -> tuple[int, list[str]]:
    """Remove training sets made before ``cutoff`` but the protected ones; (files removed, runs kept for a model)."""
    service = config.features.service
    prefix = layout.training_set_prefix(service)
    runs: dict[str, list[str]] = {}
    for key in storage.list(prefix + "/"):
        rest = key[len(prefix) + 1 :]
        if "/" in rest:
            runs.setdefault(rest.split("/", 1)[0], []).append(key)
    keep = protected_training_sets(storage, config)
    removed, spared = 0, []
    for run, keys in sorted(runs.items()):
        at = id_time(run)
        if at is None or at >= cutoff:
            continue
        if run in keep:
            spared.append(run)
            continue
        manifest = layout.training_set_manifest_key(service, run)  # first: a half-removed set is never listed
        removed += _delete(storage, sorted(keys, key=lambda k: k != manifest), dry_run)
    return removed, spared


def inference_log(storage: Storage, config: Config, cutoff: datetime, dry_run: bool) -> tuple[int, int]:
    """(rows, files) removed from the model's inference log: partitions before the cutoff's day whole, that day's
    files rewritten with their rows at or after the cutoff."""
    from kfloop.serving.log_table import TIMESTAMP, log_prefix

    prefix = log_prefix(config)
    day = cutoff.astimezone(UTC).date().isoformat()
    rows = files = 0
    for key in storage.list(prefix + "/"):
        part = next((p for p in key.split("/") if p.startswith("date=")), None)
        if part is None or not key.endswith(".parquet") or part.removeprefix("date=") > day:
            continue
        data = pa.BufferReader(storage.read_bytes(key))
        if part.removeprefix("date=") < day:
            rows += pq.read_metadata(data).num_rows
            files += _delete(storage, [key], dry_run)
            continue
        table = pq.read_table(data)
        column = table.column(TIMESTAMP)
        kept = table.filter(pc.greater_equal(column, pa.scalar(cutoff, column.type)))
        if kept.num_rows == table.num_rows:
            continue
        rows += table.num_rows - kept.num_rows
        if kept.num_rows == 0:
            files += _delete(storage, [key], dry_run)
        elif not dry_run:
            sink = pa.BufferOutputStream()
            pq.write_table(kept, sink, compression="zstd")
            storage.write_bytes(key, sink.getvalue().to_pybytes())
    return rows, files
