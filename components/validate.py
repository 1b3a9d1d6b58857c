"""Validate stage: enforce the data contract on the lake dataset → clean dataset, quarantine, report.

Two passes over the committed lake files, batch by batch (bounded memory): the first finds duplicates
and table-level measures, the second applies the row checks and writes the outputs. The clean
dataset is only replaced when the gate passes, so training never sees data that failed the contract.
"""

# No `from __future__ import annotations` here: kfp reads the component signatures at decoration time.
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from kfloop import lake
from kfloop.components.ingest import new_run_id
from kfloop.config import Config, config_from_json
from kfloop.config.contract import parse_duration
from kfloop.contract.checks import RowCheck, check_rules_compile, row_checks
from kfloop.contract.duplicates import DuplicateIndex, DuplicateOutcome
from kfloop.contract.report import MAX_EXAMPLES, CheckResult, QualityReport, SchemaChange, report_from_json
from kfloop.contract.schema_diff import describe
from kfloop.errors import SourceError
from kfloop.schema import arrow_schema
from kfloop.storage import Storage

REASONS_COLUMN = "_reasons"


def clean_dataset(dataset: str) -> str:
    """Name of the clean dataset derived from a lake dataset."""
    return f"{dataset}_clean"


def report_prefix(dataset: str) -> str:
    return f"reports/{dataset}/quality"


def contract_quarantine_key(dataset: str, run_id: str) -> str:
    return f"quarantine/{dataset}_contract/{run_id}.parquet"


@dataclass(frozen=True)
class ValidateResult:
    """The report plus where everything was written."""

    report: QualityReport
    clean_manifest_uri: str | None  # None when the gate failed (clean dataset left as it was)
    quarantine_uri: str | None
    report_json_uri: str
    report_html_uri: str
    html: str
    markdown: str
    already_validated: bool = False


class _Tally:
    """Failure counts and examples per row check, accumulated over batches."""

    def __init__(self, checks: list[RowCheck], example_columns: list[str]) -> None:
        self.failed = {c.check: 0 for c in checks}
        self.examples: dict[str, list[dict]] = {c.check: [] for c in checks}
        self.example_columns = example_columns

    def add(self, check: RowCheck, table: pa.Table, mask: np.ndarray) -> None:
        count = int(mask.sum())
        self.failed[check.check] += count
        room = MAX_EXAMPLES - len(self.examples[check.check])
        if count and room > 0:
            cols = [*self.example_columns]
            if check.column and check.column not in cols:
                cols.append(check.column)
            rows = table.select(cols).filter(pa.array(mask)).slice(0, room).to_pylist()
            self.examples[check.check].extend(rows)


def _fingerprint(manifest: lake.Manifest, config: Config) -> str:
    """Input content + contract: equal fingerprints give equal outputs, so a re-run can skip."""
    body = manifest.content_hash + config.contract.model_dump_json() + config.source.model_dump_json()
    return hashlib.sha256(body.encode()).hexdigest()


def _required_columns(config: Config) -> list[str]:
    src = config.source
    cols = config.contract.completeness.columns
    if cols:
        return list(cols)
    return [*src.entity_keys, src.timestamp_column, *([src.label_column] if src.label_column else [])]


def validate(  # noqa: PLR0915 - the two passes read best in one place; helpers hold the details
    config: Config, storage: Storage, *, run_id: str | None = None, now: datetime | None = None
) -> ValidateResult:
    """Run the contract over the lake dataset of ``config`` and write clean data, quarantine and report."""
    from kfloop.contract.render import render_html, render_markdown

    src, contract = config.source, config.contract
    run_id = run_id or new_run_id()
    now = now or datetime.now(UTC)
    manifest = lake.read_manifest(storage, src.dataset)
    if manifest is None or not manifest.files:
        raise SourceError(f"lake dataset {src.dataset!r} is empty: run ingestion first")
    schema = arrow_schema(src)
    check_rules_compile(contract, schema)
    clean_name = clean_dataset(src.dataset)
    fingerprint = _fingerprint(manifest, config)
    previous = lake.read_manifest(storage, clean_name)
    if previous and previous.runs and previous.runs[-1].get("fingerprint") == fingerprint:
        return _previous_result(storage, config, manifest, previous.runs[-1], run_id, now)

    # pass 1: duplicates and table-level measures
    required = _required_columns(config)
    dup_index = DuplicateIndex(contract.duplicates, src.timestamp_column) if contract.duplicates else None
    rows_in = complete = 0
    newest = None
    pass1_columns = list(
        dict.fromkeys([*required, src.timestamp_column, *(contract.duplicates.keys if contract.duplicates else ())])
    )
    for table in lake.iter_dataset(storage, manifest, src.batch_rows, pass1_columns):
        rows_in += table.num_rows
        valid = [pc.is_valid(table.column(c)) for c in required]
        if valid:
            all_valid = valid[0]
            for v in valid[1:]:
                all_valid = pc.and_(all_valid, v)
            complete += int(pc.sum(all_valid).as_py() or 0)
        else:
            complete += table.num_rows
        hi = pc.max(table.column(src.timestamp_column)).as_py()
        newest = hi if newest is None or (hi is not None and hi > newest) else newest
        if dup_index:
            dup_index.add(table)
    plan = dup_index.plan() if dup_index else None

    # pass 2: row checks, clean + quarantine outputs
    checks = row_checks(contract)
    qchecks = [c for c in checks if c.severity == "quarantine"]
    example_cols = list(dict.fromkeys([*(contract.duplicates.keys if contract.duplicates else ()), *src.entity_keys]))
    tally = _Tally(checks, example_cols)
    writer = lake.PartitionWriter(clean_name, schema, src.timestamp_column, run_id, src.batch_rows * 4)
    rows_clean = rows_quarantined = 0
    offset = 0
    with tempfile.TemporaryDirectory(prefix="kfloop-validate-") as tmp:
        qpath = Path(tmp) / "quarantine.parquet"
        qwriter: pq.ParquetWriter | None = None
        try:
            for table in lake.iter_dataset(storage, manifest, src.batch_rows, schema.names):
                n = table.num_rows
                drop = plan.drop[offset : offset + n] if plan else np.zeros(n, dtype=bool)
                if plan:
                    plan.count(table, offset)
                offset += n
                masks = {}
                for check in checks:
                    mask = check.evaluate(table)
                    masks[check.check] = mask
                    tally.add(check, table, mask)
                qmask = np.zeros(n, dtype=bool)
                for check in qchecks:
                    qmask |= masks[check.check]
                qmask &= ~drop
                keep = ~qmask & ~drop
                clean = table.filter(pa.array(keep))
                writer.add(clean)
                rows_clean += clean.num_rows
                if qmask.any():
                    q = _quarantine_rows(table, qmask, qchecks, masks)
                    qwriter = qwriter or pq.ParquetWriter(qpath, q.schema, compression="zstd")
                    qwriter.write_table(q)
                    rows_quarantined += q.num_rows
            dups = plan.outcome() if plan else DuplicateOutcome(0, 0, np.zeros(rows_in, dtype=bool))
            quarantine_uri = None
            if qwriter is not None:
                qwriter.close()
                storage.upload_file(qpath, contract_quarantine_key(src.dataset, run_id))
                quarantine_uri = storage.uri(contract_quarantine_key(src.dataset, run_id))
            results = [_row_result(c, tally, rows_in) for c in checks]
            results += _table_results(config, rows_in, complete, rows_clean, newest, now, dups)
            changes = _latest_schema_changes(manifest)
            results.append(_schema_result(changes))
            report = QualityReport(
                dataset=src.dataset,
                run_id=run_id,
                created=now.isoformat(),
                rows_in=rows_in,
                rows_clean=rows_clean,
                rows_quarantined=rows_quarantined,
                rows_dropped_duplicates=int(dups.drop.sum()),
                checks=results,
                schema_changes=changes,
            )
            html, markdown = render_html(report), render_markdown(report)
            prefix = _write_report(storage, report, html, markdown)
            clean_uri = None
            if report.gate_passed:
                files = writer.store(storage)
                run = {
                    "run_id": run_id,
                    "fingerprint": fingerprint,
                    "input_content_hash": manifest.content_hash,
                    "report": f"{prefix}.json",
                    "quarantine": quarantine_uri,
                    "rows": rows_clean,
                }
                base = previous or lake.new_manifest(clean_name, schema)
                lake.replace(storage, base, files, run)
                clean_uri = storage.uri(lake.manifest_key(clean_name))
        finally:
            writer.close()
    return ValidateResult(
        report, clean_uri, quarantine_uri, storage.uri(f"{prefix}.json"), storage.uri(f"{prefix}.html"), html, markdown
    )


def _freshness_result(config: Config, newest: datetime | None, now: datetime) -> CheckResult:
    fresh = config.contract.freshness
    assert fresh is not None
    limit = parse_duration(fresh.max_age)
    age = now - newest if newest else None
    ok = age is not None and age <= limit
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


def _latest_schema_changes(manifest: lake.Manifest) -> list[SchemaChange]:
    """Schema changes ingestion reported for the newest source file (breaking ones never get this far)."""
    for run in reversed(manifest.runs):
        if "schema_changes" in run:
            return [SchemaChange(**c) for c in run["schema_changes"]]
    return []


def _schema_result(changes: list[SchemaChange]) -> CheckResult:
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


def _previous_result(
    storage: Storage, config: Config, manifest: lake.Manifest, run: dict, run_id: str, now: datetime
) -> ValidateResult:
    """Same input, same contract: reuse the last report, but re-judge freshness (time has moved on)."""
    from kfloop.contract.render import render_html, render_markdown

    dataset = config.source.dataset
    old = report_from_json(storage.read_text(run["report"]))
    newest = datetime.fromisoformat(manifest.watermark) if manifest.watermark else None
    checks = [_freshness_result(config, newest, now) if c.kind == "freshness" else c for c in old.checks]
    report = QualityReport(
        dataset=dataset,
        run_id=run_id,
        created=now.isoformat(),
        rows_in=old.rows_in,
        rows_clean=old.rows_clean,
        rows_quarantined=old.rows_quarantined,
        rows_dropped_duplicates=old.rows_dropped_duplicates,
        checks=checks,
        schema_changes=old.schema_changes,
    )
    html, markdown = render_html(report), render_markdown(report)
    prefix = _write_report(storage, report, html, markdown)
    return ValidateResult(
        report,
        storage.uri(lake.manifest_key(clean_dataset(dataset))) if report.gate_passed else None,
        run.get("quarantine"),
        storage.uri(f"{prefix}.json"),
        storage.uri(f"{prefix}.html"),
        html,
        markdown,
        already_validated=True,
    )


def _write_report(storage: Storage, report: QualityReport, html: str, markdown: str) -> str:
    """Store the report as JSON, HTML and Markdown under the run id, and as latest.json."""
    prefix = f"{report_prefix(report.dataset)}/{report.run_id}"
    storage.write_text(f"{prefix}.html", html)
    storage.write_text(f"{prefix}.md", markdown)
    storage.write_text(f"{prefix}.json", report.to_json())
    storage.write_text(f"{report_prefix(report.dataset)}/latest.json", report.to_json())
    return prefix


def _quarantine_rows(table: pa.Table, qmask: np.ndarray, qchecks: list[RowCheck], masks: dict) -> pa.Table:
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


def _row_result(check: RowCheck, tally: _Tally, rows_in: int) -> CheckResult:
    failed = tally.failed[check.check]
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
        examples=tally.examples[check.check],
    )


def _table_results(
    config: Config,
    rows_in: int,
    complete: int,
    rows_clean: int,
    newest: datetime | None,
    now: datetime,
    dups: DuplicateOutcome,
) -> list[CheckResult]:
    c = config.contract
    out = []
    ratio = complete / rows_in if rows_in else 1.0
    out.append(
        CheckResult(
            check="table.completeness",
            kind="completeness",
            level="table",
            severity=c.completeness.severity,
            passed=ratio >= c.completeness.min_ratio,
            failed=rows_in - complete,
            total=rows_in,
            message=f"at least {c.completeness.min_ratio:.0%} of records complete on "
            f"{', '.join(_required_columns(config))}; found {ratio:.2%}",
        )
    )
    out.append(
        CheckResult(
            check="table.min_rows",
            kind="min_rows",
            level="table",
            severity=c.min_rows.severity,
            passed=rows_clean >= c.min_rows.value,
            failed=int(rows_clean < c.min_rows.value),
            total=1,
            message=f"at least {c.min_rows.value:,} clean rows; found {rows_clean:,}",
        )
    )
    if c.freshness:
        out.append(_freshness_result(config, newest, now))
    if c.duplicates:
        mode = c.duplicates.mode
        out.append(
            CheckResult(
                check="table.duplicates",
                kind="duplicates",
                level="row",
                severity="error" if mode == "fail" else "warn",
                passed=dups.duplicates == 0,
                failed=dups.duplicates,
                total=rows_in,
                message=f"unique on {', '.join(c.duplicates.keys)} (mode {mode}): {dups.exact:,} exact duplicates, "
                f"{dups.key_conflicts:,} key duplicates with different values",
            )
        )
    return out


def run_validate_step(config_json: str, report_json_path: str, quarantine_path: str, clean_path: str) -> ValidateResult:
    """Entrypoint inside the pipeline step: resolve storage from the config, validate, write artifacts."""
    import json
    import os

    from kfloop.storage import open_storage, resolve_credentials

    config = config_from_json(config_json)
    creds = None if config.storage.type == "local" else resolve_credentials(config.storage, os.environ)
    storage = open_storage(config.storage, creds)
    result = validate(config, storage)
    Path(report_json_path).write_text(result.report.to_json())
    Path(clean_path).write_text(json.dumps({"manifest": result.clean_manifest_uri, "rows": result.report.rows_clean}))
    if result.quarantine_uri:
        key = contract_quarantine_key(config.source.dataset, result.report.run_id)
        storage.download_file(key, Path(quarantine_path))
    else:
        pq.write_table(pa.table({REASONS_COLUMN: pa.array([], pa.string())}), quarantine_path)
    return result


def validate_component(
    config_json: str,
    ingest_manifest: Input[Dataset],
    report: Output[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    clean: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
) -> NamedTuple("GateDecision", [("passed", bool), ("message", str)]):
    """KFP step: enforce the data contract; the quality report shows in the Kubeflow UI."""
    from collections import namedtuple

    from kfloop.components.validate import run_validate_step

    result = run_validate_step(config_json, report.path, quarantine.path, clean.path)
    rep = result.report
    with open(report_html.path, "w") as fh:
        fh.write(result.html)
    with open(report_md.path, "w") as fh:
        fh.write(result.markdown)
    metrics.log_metric("quality_score", rep.quality_score)
    metrics.log_metric("completeness", round(1.0 - rep.metric("completeness"), 6))
    metrics.log_metric("duplicate_rate", round(rep.metric("duplicates"), 6))
    metrics.log_metric("rows_in", rep.rows_in)
    metrics.log_metric("rows_out", rep.rows_clean)
    metrics.log_metric("rows_quarantined", rep.rows_quarantined)
    clean.metadata.update({"rows": rep.rows_clean, "manifest": result.clean_manifest_uri or ""})
    quarantine.metadata["rows"] = rep.rows_quarantined
    return namedtuple("GateDecision", ["passed", "message"])(rep.gate_passed, rep.gate_message())


def gate_component(passed: bool, message: str):
    """KFP step: stop the pipeline before any training when an `error` check failed."""
    if not passed:
        raise RuntimeError("data contract gate failed:\n" + message)
    print("data contract gate passed")
