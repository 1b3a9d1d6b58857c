"""Validate stage: enforce the data contract on the lake dataset → clean dataset, quarantine, report.

Two passes over the committed lake files (``kfloop.contract.engine``; the first only for duplicate keys), batch by
batch (bounded memory), in Arrow and numpy.
The clean dataset is only replaced when the gate passes, so training never sees data that failed the
contract. A re-run on unchanged input and contract reuses the last result, re-judging freshness.
"""

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake, lake_commit, layout
from kfloop.audit import events as audit_events
from kfloop.config import ColumnType, Config
from kfloop.config._base import METADATA_FIELDS
from kfloop.contract import table_checks
from kfloop.contract.checks import check_rules_compile, label_checks, row_checks
from kfloop.contract.engine import REASONS_COLUMN, enforce, scan
from kfloop.contract.report import QualityReport, report_from_json
from kfloop.errors import SourceError
from kfloop.lineage.run import emits
from kfloop.schema import arrow_schema
from kfloop.step import new_run_id
from kfloop.storage import Storage


@dataclass(frozen=True)
class ValidateResult:
    """The report plus where everything was written."""

    report: QualityReport
    clean_manifest_uri: str | None  # None when the gate failed (clean dataset left as it was)
    quarantine_uri: str | None
    quarantine_key: str | None
    report_json_uri: str
    report_html_uri: str
    html: str
    markdown: str
    already_validated: bool = False


def _fingerprint(manifest: lake.Manifest, config: Config) -> str:
    """Input content + contract (+ the task, whose label check it implies): equal fingerprints give equal
    outputs, so a re-run can skip. A binary task adds nothing, and neither does an appending source (``replace``
    false), so earlier fingerprints stay valid."""
    task = "" if config.training.task == "binary" else config.training.task
    source = config.source.model_dump_json(
        exclude=set(METADATA_FIELDS) | (set() if config.source.replace else {"replace"})
    )
    body = manifest.content_hash + config.contract.model_dump_json() + source + task
    return hashlib.sha256(body.encode()).hexdigest()


@emits("validate")
def validate(
    config: Config,
    storage: Storage,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
    policy: lake_commit.CommitPolicy | None = None,
) -> ValidateResult:
    """Run the contract over the lake dataset of ``config`` and write clean data, quarantine and report.

    The lake manifest read at the start is the snapshot validated (ingestion may commit meanwhile: the
    next run sees it, the fingerprint differs). The clean dataset is replaced under its lease; the files
    it replaces stay readable for ``policy.retire_grace_s``, for readers of the previous manifest.
    """
    src = config.source
    run_id = run_id or new_run_id()
    now = now or datetime.now(UTC)
    manifest = lake.read_manifest(storage, src.dataset)
    if manifest is None or not manifest.files:
        raise SourceError(_empty_lake_message(manifest, src.dataset))
    schema = arrow_schema(src)
    check_rules_compile(config.contract, schema)
    clean_name = layout.clean_dataset(src.dataset)
    fingerprint = _fingerprint(manifest, config)
    previous = lake.read_manifest(storage, clean_name)
    if previous and previous.runs and previous.runs[-1].get("fingerprint") == fingerprint:
        return _previous_result(storage, config, manifest, previous.runs[-1], run_id, now)

    label = src.label_column if src.label_column and src.columns[src.label_column] is not ColumnType.BOOL else None
    integer = label is not None and src.columns[label] is ColumnType.INT64
    checks = row_checks(config.contract, src.timezone) + label_checks(
        label, config.training.task, integer, config.contract
    )
    scanned = scan(storage, manifest, config)
    # the lake's files hold one event date each and a batch holds whole files, so buffering across batches would
    # not make larger row groups: each batch's rows are written as they come (beside the checks, on the engine's
    # write-behind thread), not all at the end
    writer = lake.PartitionWriter(clean_name, schema, src.timestamp_column, run_id, max_buffered_rows=1)
    with tempfile.TemporaryDirectory(prefix="kfloop-validate-") as tmp:
        qpath = Path(tmp) / "quarantine.parquet"
        try:
            done = enforce(storage, manifest, config, checks, scanned, writer, qpath)
            report = _report(config, storage, manifest, run_id, now, checks, done)
            # the report goes first: every stored quarantine file then belongs to a published run
            html, markdown, keys = _publish(storage, report)
            quarantine_uri = quarantine_key = None
            if qpath.exists():
                quarantine_key = layout.contract_quarantine_key(src.dataset, run_id)
                reasons = audit_events.parquet_reasons(qpath, REASONS_COLUMN)
                storage.move_file(qpath, quarantine_key)
                quarantine_uri = storage.uri(quarantine_key)
                audit_events.validate_quarantine(
                    storage, src.dataset, run_id, done.rows_quarantined, quarantine_key, reasons
                )
            clean_uri = None
            if report.gate_passed:
                run = {
                    "run_id": run_id,
                    "fingerprint": fingerprint,
                    "input_content_hash": manifest.content_hash,
                    "input_commits": len(manifest.runs),
                    "report": keys["json"],
                    "quarantine": quarantine_key,
                    "rows": done.rows_clean,
                }
                _replace_clean(storage, src.dataset, schema, writer, run, policy)
                clean_uri = storage.uri(layout.manifest_key(clean_name))
        finally:
            writer.close()
    return ValidateResult(
        report,
        clean_uri,
        quarantine_uri,
        quarantine_key,
        storage.uri(keys["json"]),
        storage.uri(keys["html"]),
        html,
        markdown,
    )


def _empty_lake_message(manifest: lake.Manifest | None, dataset: str) -> str:
    """Why there is nothing to validate: never ingested, or every row read so far was unreadable or too late."""
    if manifest is None or not manifest.runs:
        return f"lake dataset {dataset!r} is empty: run ingestion first"
    read = sum(r.get("rows_read", 0) for r in manifest.runs)
    bad = sum(r.get("rows_quarantined", 0) for r in manifest.runs)
    late = sum(r.get("rows_too_late", 0) for r in manifest.runs)
    return (
        f"lake dataset {dataset!r} has no rows: {len(manifest.runs)} ingest run(s) read {read:,} rows, "
        f"{bad:,} unreadable (see {layout.quarantine_prefix(dataset)}/), {late:,} too late "
        f"(see {layout.too_late_prefix(dataset)}/); fix the source file and ingest it again"
    )


def _replace_clean(
    storage: Storage,
    dataset: str,
    schema: pa.Schema,
    writer: lake.PartitionWriter,
    run: dict,
    policy: lake_commit.CommitPolicy | None,
) -> None:
    """Store the clean files and make them the whole clean dataset, under its lease. A concurrent run that
    already committed the same fingerprint (same snapshot, same contract), or a newer snapshot of the lake
    (more ingest commits), wins; ours are discarded, so a slow run never rolls the clean data back."""
    clean_name = layout.clean_dataset(dataset)
    with lake_commit.transaction(storage, clean_name, run["run_id"], policy=policy) as txn:
        files = writer.store(storage)
        txn.stage(*(f.key for f in files))

        def update(current: lake.Manifest) -> lake.Manifest | None:
            last = current.runs[-1] if current.runs else {}
            if last.get("fingerprint") == run["fingerprint"] or _validated_newer(storage, dataset, last, run):
                return None
            return lake_commit.replaced(current, files, run)

        txn.commit(update, lake.new_manifest(clean_name, schema))


def _validated_newer(storage: Storage, dataset: str, last: dict, run: dict) -> bool:
    """Whether the clean dataset's last commit validated a strictly newer snapshot of the lake as it is now: more
    ingest commits, and its input the first of them. A lake rebuilt since (deleted and ingested again) does not
    hold that snapshot: ours, read from the lake now, wins whatever the commit counts say."""
    theirs = last.get("input_commits", -1)
    if theirs <= run["input_commits"]:
        return False
    now = lake.read_manifest(storage, dataset)
    if now is None or len(now.runs) < theirs:
        return False
    runs = {r.get("run_id") for r in now.runs[:theirs]}
    snapshot = dataclasses.replace(now, files=[f for f in now.files if f.run_id in runs])
    return snapshot.content_hash == last.get("input_content_hash")


def _report(config, storage, manifest, run_id, now, checks, done) -> QualityReport:
    """Every check's result; rows ingestion rejected count as rows in and as quarantined."""
    rejected, parse_check = table_checks.ingest_rejects(storage, manifest)
    rows_in = done.rows_in + rejected
    results = [dataclasses.replace(parse_check, total=rows_in)]
    results += [done.tally.result(c, done.rows_in) for c in checks]
    results.append(table_checks.completeness(config, done.rows_in, done.complete, done.incomplete_examples))
    results.append(table_checks.min_rows(config, done.rows_clean))
    if config.contract.freshness:
        results.append(table_checks.freshness(config, done.newest, now))
    if config.contract.duplicates:
        results.append(table_checks.duplicates(config, done.rows_in, done.dups, done.duplicate_examples))
    changes = table_checks.latest_schema_changes(manifest)
    results.append(table_checks.schema(changes))
    return QualityReport(
        dataset=config.source.dataset,
        run_id=run_id,
        created=now.isoformat(),
        rows_in=rows_in,
        rows_clean=done.rows_clean,
        rows_quarantined=done.rows_quarantined + rejected,
        rows_dropped_duplicates=int(done.dups.drop.sum()),
        checks=results,
        schema_changes=changes,
    )


def _publish(storage: Storage, report: QualityReport) -> tuple[str, str, dict[str, str]]:
    """Render and store the report as JSON, HTML and Markdown under the run id, and as latest.json."""
    from kfloop.contract.render import render_html, render_markdown

    html, markdown = render_html(report), render_markdown(report)
    keys = {ext: layout.report_key(report.dataset, report.run_id, ext) for ext in ("html", "md", "json")}
    storage.write_text(keys["html"], html)
    storage.write_text(keys["md"], markdown)
    body = report.to_json()
    storage.write_text(keys["json"], body)
    storage.write_text(layout.latest_key(layout.report_prefix(report.dataset)), body)
    return html, markdown, keys


def _previous_result(
    storage: Storage, config: Config, manifest: lake.Manifest, run: dict, run_id: str, now: datetime
) -> ValidateResult:
    """Same input, same contract: reuse the last report, but re-judge freshness (time has moved on)."""
    old = report_from_json(storage.read_text(run["report"]))
    newest = datetime.fromisoformat(manifest.watermark) if manifest.watermark else None
    checks = [table_checks.freshness(config, newest, now) if c.kind == "freshness" else c for c in old.checks]
    report = QualityReport(
        dataset=config.source.dataset,
        run_id=run_id,
        created=now.isoformat(),
        rows_in=old.rows_in,
        rows_clean=old.rows_clean,
        rows_quarantined=old.rows_quarantined,
        rows_dropped_duplicates=old.rows_dropped_duplicates,
        checks=checks,
        schema_changes=old.schema_changes,
    )
    html, markdown, keys = _publish(storage, report)
    clean_key = layout.manifest_key(layout.clean_dataset(config.source.dataset))
    clean = storage.uri(clean_key) if report.gate_passed else None
    return ValidateResult(
        report,
        clean,
        storage.uri(run["quarantine"]) if run.get("quarantine") else None,
        run.get("quarantine"),
        storage.uri(keys["json"]),
        storage.uri(keys["html"]),
        html,
        markdown,
        already_validated=True,
    )


def run_validate_step(
    config_json: str, report_json_path: str, quarantine_path: str, clean_path: str, table: str = ""
) -> ValidateResult:
    """Entrypoint inside the pipeline step: resolve storage from the config, validate, write artifacts. ``table``:
    an attribute table of ``features.tables`` under its own contract instead of the main source ("")."""
    import json

    from kfloop.step import open_step

    config, storage = open_step(config_json, table)
    result = validate(config, storage)
    Path(report_json_path).write_text(result.report.to_json())
    Path(clean_path).write_text(json.dumps({"manifest": result.clean_manifest_uri, "rows": result.report.rows_clean}))
    if result.quarantine_key:
        storage.download_file(result.quarantine_key, Path(quarantine_path))
    else:
        pq.write_table(pa.table({REASONS_COLUMN: pa.array([], pa.string())}), quarantine_path)
    return result
