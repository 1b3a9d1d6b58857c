"""Rich tables for run summaries (one place, so `ingest` and `run` print the same thing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from kfloop.kube.apply import ApplyReport


def _table(title: str) -> Table:
    """Two columns, label and value; values fold instead of being cut, so URIs stay copyable."""
    t = Table(title=escape(title), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    return t


def ingest_table(r: dict) -> Table:
    """The ingestion part of a summary."""
    t = _table(f"ingest → lake/{r['dataset']}")
    if r["already_ingested"]:
        t.add_row("source", escape(f"{r['source']} (already ingested: same bytes as an earlier run; nothing added)"))
    else:
        t.add_row("source", escape(r["source"]))
        t.add_row("rows read", f"{r['rows_read']:,}")
        t.add_row("rows written", f"{r['rows_written']:,} in {r['files']} partition file(s)")
        where = f"  → {r['quarantine_uri']}" if r["quarantine_uri"] else ""
        t.add_row("rows quarantined", escape(f"{r['rows_quarantined']:,}{where}"))
        t.add_row("rows skipped (already ingested or quarantined)", f"{r['rows_skipped']:,}")
        if r.get("rows_late"):
            t.add_row("rows late (within allowed lateness)", f"{r['rows_late']:,}")
        if r.get("rows_too_late"):
            where = f"  → {r['too_late_uri']}" if r.get("too_late_uri") else ""
            t.add_row("[bold yellow]rows too late (not ingested)[/]", escape(f"{r['rows_too_late']:,}{where}"))
    t.add_row("dataset rows", f"{r['dataset_rows']:,}")
    t.add_row("watermark", str(r["watermark_after"]))
    t.add_row("manifest", escape(r["manifest_uri"]))
    t.add_row("run id", r["run_id"])
    return t


def quality_table(q: dict) -> Table:
    """The validation part of a summary: score, gate, row flow, failing checks."""
    gate = "[green]passed[/]" if q["gate_passed"] else "[bold red]FAILED[/]"
    t = _table(f"validate → data contract on {q['dataset']}")
    t.add_row("quality score", f"{q['quality_score']:.2f} %")
    t.add_row("gate", gate)
    t.add_row("rows in → clean", f"{q['rows_in']:,} → {q['rows_clean']:,}")
    t.add_row("quarantined / duplicates dropped", f"{q['rows_quarantined']:,} / {q['rows_dropped_duplicates']:,}")
    for c in q["checks"]:
        if not c["passed"]:
            t.add_row(escape(f"  ✗ {c['check']} ({c['severity']})"), escape(f"{c['failed']:,} failing: {c['message']}"))
    return t


def tables_table(tables: dict[str, dict]) -> Table:
    """The attribute tables' part of a `kfloop run` summary: one row per table, its ingest and its gate
    (``tables``: name → {"ingest": run manifest, "quality": report}, as ``LocalRun.tables`` has them)."""
    t = _table("attribute tables → lake (each under its own contract)")
    for name, r in tables.items():
        i, q = r.get("ingest") or {}, r.get("quality") or {}
        parts = []
        if i:
            if i["already_ingested"]:
                parts.append("already ingested (same bytes)")
            else:
                parts.append(f"+{i['rows_written']:,} of {i['rows_read']:,} rows read")
                if i.get("rows_quarantined"):
                    parts.append(f"{i['rows_quarantined']:,} unreadable rows quarantined")
                if i.get("rows_too_late"):  # never silently: counted here as for the main source
                    where = f" → {i['too_late_uri']}" if i.get("too_late_uri") else ""
                    parts.append(f"{i['rows_too_late']:,} rows too late (not ingested){where}")
            parts.append(f"{i['dataset_rows']:,} rows in lake/{i['dataset']}")
        if q:
            parts.append(
                f"{q['rows_in']:,} → {q['rows_clean']:,} clean, {q['rows_quarantined']:,} quarantined, "
                f"{q['rows_dropped_duplicates']:,} duplicates dropped"
            )
            parts.append(f"quality {q['quality_score']:.2f} %")
        value = escape("; ".join(parts) or "did not run")
        if q:
            failing = [c["check"] for c in q["checks"] if not c["passed"] and c["severity"] == "error"]
            value += "; gate " + (
                "[green]passed[/]" if q["gate_passed"] else "[bold red]FAILED[/]: " + escape(", ".join(failing))
            )
        t.add_row(escape(name), value)
    return t


def features_table(features: list, materialized: list, training_set: dict) -> Table:
    """The feature part of a summary: offline rows, online writes, the training set's splits."""
    t = _table("features → Feast")
    online = {m["view"]: m for m in materialized}
    for u in features:
        m = online.get(u["view"], {})
        t.add_row(
            escape(u["view"]),
            f"+{u['rows_added']:,} offline rows"
            + (f", {u['rows_removed']:,} replaced or removed" if u.get("rows_removed") else "")
            + f" ({u['offline_rows']:,} total); {m.get('rows_written', 0):,} entity rows written online"
            + (f", {m['rows_deleted']:,} entities deleted online" if m.get("rows_deleted") else ""),
        )
    if training_set:
        rows = ", ".join(f"{k} {v:,}" for k, v in training_set["rows"].items())
        t.add_row("training set", escape(f"{rows} → {training_set['prefix']}"))
        t.add_row("labels", f"{training_set.get('unlabeled_rows_dropped', 0):,} unlabeled rows dropped")
        if training_set.get("rows_before_window"):
            t.add_row("window", f"{training_set['rows_before_window']:,} older rows outside features.training_window")
        if stored := training_set.get("features"):
            extra = len(training_set.get("request_features", []))
            inputs = f"{len(stored)} stored features ({stored[0]}, …) + {extra} request features"
            t.add_row("model inputs", escape(inputs))
        t.add_row(
            "feature service",
            escape(f"{training_set['feature_service']} (version {training_set['feature_service_version']})"),
        )
    return t


def model_table(card: dict, decision: dict | None, champion: str | None) -> Table:
    """The training part of a summary: test metrics of candidate vs champion, the gate, the champion."""
    t = _table(f"train + evaluate → registry/{card.get('model', '?')}")
    task = card.get("task", "binary")  # regression and multiclass have no threshold
    how = f"threshold {card['threshold']:.4f}" if task == "binary" else task
    t.add_row("candidate", escape(f"{card['version']} ({card['framework']}), {how}"))
    if card.get("reused"):
        key = card.get("identity", {}).get("key", "")[:12]
        t.add_row("reused", escape(f"not trained again: same training set, settings and code (identity {key})"))
    if decision:
        cand, champ = decision["candidate"], decision.get("champion")
        keys = {
            "regression": ("mae", "rmse", "r2"),
            "multiclass": ("accuracy", "macro_f1", "log_loss", "roc_auc_macro"),
        }.get(task, ("roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "calibration_error", "brier_score"))
        for key in keys:
            if key not in cand:  # a decision recorded before the metric existed
                continue
            other = f"  (champion {champ['version']}: {champ[key]:.4f})" if champ and key in champ else ""
            t.add_row(f"test {key}", f"{cand[key]:.4f}{other}")
        if "calibration_error_uncalibrated" in cand:  # a calibrated model: its raw scores' errors too
            before = f"calibration error {cand['calibration_error_uncalibrated']:.4f} → {cand['calibration_error']:.4f}"
            if "brier_score_uncalibrated" in cand:
                before += f", Brier score {cand['brier_score_uncalibrated']:.4f} → {cand['brier_score']:.4f}"
            t.add_row("test calibration", escape(f"{before} (raw → served scores)"))
        verdict = "[green]promoted[/]" if decision["promoted"] else "[yellow]not promoted[/]"
        t.add_row("gate", verdict + ": " + escape("; ".join(decision["reasons"])))
    t.add_row("champion", escape(champion or "none"))
    return t


def deploy_table(d: dict) -> Table:
    """The deploy part of a summary: what serves the champion now."""
    t = _table("deploy → serving")
    action = d.get("action", "?")
    t.add_row("action", escape(action))
    t.add_row("version", escape(str(d.get("version") or "none")))
    if action in ("created", "updated", "unchanged"):
        t.add_row("InferenceService", escape(f"{d['service']} in namespace {d['namespace']}"))
        if d.get("previous") and action == "updated":
            t.add_row("previous version", escape(d["previous"]))
        if d.get("canary_traffic_percent") is not None:
            t.add_row("canary traffic", f"{d['canary_traffic_percent']} %")
    note = d.get("message") or d.get("reason")
    if note:
        t.add_row("note", escape(note))
    return t


def serving_table(r: dict) -> Table:
    """What `kfloop serve-check` saw from the client side."""
    t = _table(f"serving → {r['model']} {r['version']} (KServe, Feast online features)")
    t.add_row("started in", f"{r['startup_s']} s")
    for protocol, (p50, p99) in r["latency_ms"].items():
        t.add_row(f"{protocol} latency", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (one row, client side)")
    t.add_row("batch", f"{r['batch_rows']} test rows: {r['flagged']} flagged, {r['defaulted']} with default features")
    t.add_row("inference log", f"{r['logged_rows']} of {r['sent_rows']} rows written")
    t.add_row("shutdown", "clean" if r["clean_exit"] else "[red]not clean[/]")
    return t


def apply_table(report: ApplyReport) -> Table:
    """What a server-side apply did (`kfloop deploy`, `kfloop schedules apply`): one row per object, in apply
    order (the totals are ``report.totals()``, printed under it on one line)."""
    server = " (server dry run: nothing stored)" if report.dry_run == "server" else ""
    t = Table(title=f"apply{server}", title_justify="left")
    t.add_column("object", overflow="fold")
    t.add_column("namespace", overflow="fold")
    t.add_column("result")
    colour = {"created": "green", "configured": "yellow", "unchanged": "dim"}
    for r in report.results:
        style = colour.get(r.action, "")
        t.add_row(escape(r.ref), escape(r.namespace or "-"), f"[{style}]{r.action}[/]" if style else r.action)
    return t
