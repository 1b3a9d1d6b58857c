"""Reporting: the printed table and the JSON file (``.kfloop/bench/<name>.json``).

Why separate from the runner: the table is for people comparing ratios at a glance, the JSON for
tracking them across commits; neither should grow the timing code.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.harness import Report


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MB"


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_table(report: Report) -> str:
    """The human summary: median time, throughput, ratios, peak RSS, and latencies when reported."""
    b = report.benchmark
    rows_note = f", {b.rows:,} rows" if b.rows else ""
    lines = [f"{b.name}: {b.title}{rows_note}, {report.repeat} repeat(s), median shown"]
    header = ["case", "role", "median s", "rows/s" if b.rows else "runs/s", "x peer", "of floor", "peak RSS Δ"]
    has_lat = any(r.latencies for r in report.results)
    if has_lat:
        header += ["p50 ms", "p99 ms"]
    table = [header]
    for r in report.results:
        row = [
            r.name,
            r.role,
            f"{r.median:.3f}",
            f"{r.speed:,.0f}" if b.rows else f"{r.speed:.2f}",
            _opt(r.vs_peer, ".2f") + ("x" if r.vs_peer is not None else ""),
            _opt(r.of_floor, ".0%"),
            _mb(r.peak_rss),
        ]
        if has_lat:
            p50, p99 = r.percentile(50), r.percentile(99)
            row += [_opt(p50 and p50 * 1e3, ".2f"), _opt(p99 and p99 * 1e3, ".2f")]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    for aim in report.aims():
        verdict = "n/a" if aim.achieved is None else ("met" if aim.met else "MISSED")
        lines.append(f"aim {aim.label}: {aim.shown()} {verdict}")
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """Machine-readable results, for tracking ratios across commits."""
    b = report.benchmark
    cases = [
        {
            "name": r.name,
            "role": r.role,
            "times_s": r.times,
            "median_s": r.median,
            "rows_per_s": r.speed if b.rows else None,
            "vs_peer": r.vs_peer,
            "of_floor": r.of_floor,
            "peak_rss_delta_bytes": r.peak_rss,
            "calls": len(r.latencies),
            "p50_s": r.percentile(50),
            "p99_s": r.percentile(99),
        }
        for r in report.results
    ]
    return {
        "benchmark": b.name, "title": b.title, "rows": b.rows, "repeat": report.repeat, "started": report.started,
        "params": dict(b.params), "cases": cases,
        "aims": [{"aim": a.label, "target": a.target, "achieved": a.achieved, "met": a.met} for a in report.aims()],
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": _cpu_count(), "processor": platform.processor()},
    }  # fmt: skip


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def write_json(report: Report, out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically (a killed run never leaves half a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.benchmark.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(report), indent=2) + "\n")
    tmp.replace(path)
    return path
