"""Rich tables for run summaries (one place, so `ingest` and `run` print the same thing)."""

from __future__ import annotations

from rich.table import Table


def ingest_table(r: dict) -> Table:
    """The ingestion part of a summary."""
    t = Table(title=f"ingest → lake/{r['dataset']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if r["already_ingested"]:
        t.add_row("source", f"{r['source']} (already ingested: same bytes as an earlier run; nothing added)")
    else:
        t.add_row("source", r["source"])
        t.add_row("rows read", f"{r['rows_read']:,}")
        t.add_row("rows written", f"{r['rows_written']:,} in {r['files']} partition file(s)")
        where = f"  → {r['quarantine_uri']}" if r["quarantine_uri"] else ""
        t.add_row("rows quarantined", f"{r['rows_quarantined']:,}{where}")
        t.add_row("rows skipped (≤ watermark)", f"{r['rows_skipped']:,}")
    t.add_row("dataset rows", f"{r['dataset_rows']:,}")
    t.add_row("watermark", str(r["watermark_after"]))
    t.add_row("manifest", r["manifest_uri"])
    t.add_row("run id", r["run_id"])
    return t


def quality_table(q: dict) -> Table:
    """The validation part of a summary: score, gate, row flow, failing checks."""
    gate = "[green]passed[/]" if q["gate_passed"] else "[bold red]FAILED[/]"
    t = Table(title=f"validate → data contract on {q['dataset']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("quality score", f"{q['quality_score']:.2f} %")
    t.add_row("gate", gate)
    t.add_row("rows in → clean", f"{q['rows_in']:,} → {q['rows_clean']:,}")
    t.add_row("quarantined / duplicates dropped", f"{q['rows_quarantined']:,} / {q['rows_dropped_duplicates']:,}")
    for c in q["checks"]:
        if not c["passed"]:
            t.add_row(f"  ✗ {c['check']} ({c['severity']})", f"{c['failed']:,} failing: {c['message']}")
    return t
