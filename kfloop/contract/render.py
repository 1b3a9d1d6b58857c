"""Human views of a :class:`QualityReport`: a self-contained HTML page and a compact Markdown summary.

The HTML page needs no network and no JavaScript. Every check row in the "All checks" table carries
``data-check="<id>"`` and ``data-passed="true|false"``; each failing-check card carries
``data-failing-check="<id>"``, so tests and tooling can find them.
"""

from __future__ import annotations

from html import escape

from kfloop.contract import report as report_module
from kfloop.contract.report import CheckResult, QualityReport, SchemaChange

__all__ = ["render_html", "render_markdown"]


def _score_definition() -> str:
    """The quality-score paragraph of the report module docstring, as one plain line (single source)."""
    _, sep, rest = (report_module.__doc__ or "").partition("Quality score")
    return " ".join((sep + rest).split()).replace("``", "")


SCORE_DEFINITION = _score_definition()
_SEVERITY_ORDER = {"error": 0, "quarantine": 1, "warn": 2}

_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:#1f2933;background:#f5f7fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px}
.meta{color:#52606d;font-size:13px}.meta code{background:#e4e7eb;padding:1px 5px;border-radius:4px}
header{display:flex;flex-wrap:wrap;gap:24px;align-items:center;background:#fff;border:1px solid #d9e2ec;
 border-radius:10px;padding:18px 24px;margin-top:16px}
.score{font-size:56px;font-weight:700;line-height:1}.score small{font-size:24px;color:#52606d}
.score-label{font-size:12px;color:#52606d;text-transform:uppercase;margin-top:4px}
.gate{font-size:18px;font-weight:700;padding:6px 16px;border-radius:8px;color:#fff}
.gate.pass{background:#2f9e44}.gate.fail{background:#c92a2a}
.counts{display:flex;gap:20px;margin-left:auto}.counts div{text-align:right}
.counts b{display:block;font-size:22px}.counts span{font-size:12px;color:#52606d;text-transform:uppercase}
.definition{font-size:12px;color:#616e7c;margin:8px 0 0;max-width:960px}
.card{background:#fff;border:1px solid #d9e2ec;border-left:5px solid #c92a2a;border-radius:8px;
 padding:12px 16px;margin-bottom:12px}
.card.warn{border-left-color:#f08c00}.card.quarantine{border-left-color:#7048e8}
.card h3{margin:0;font-size:16px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.card p{margin:6px 0}.stat{color:#52606d;font-size:13px}
.badge{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;padding:2px 8px;
 border-radius:10px;color:#fff;background:#c92a2a}
.badge.warn{background:#f08c00}.badge.quarantine{background:#7048e8}.badge.breaking{background:#c92a2a}
.badge.ok{background:#2f9e44}.badge.muted{background:#9aa5b1}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}
th,td{border:1px solid #d9e2ec;padding:5px 9px;text-align:left;vertical-align:middle}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.examples{width:auto;max-width:100%;margin-top:6px}table.examples td{font-family:ui-monospace,monospace}
tr[data-passed="false"] td{background:#fff5f5}
.yes,.no{font-size:16px;font-weight:700}.yes{color:#2f9e44}.no{color:#c92a2a}
.none{color:#52606d;font-style:italic}
"""


def _pct(rate: float) -> str:
    """Format a 0-1 rate as a percentage; tiny non-zero rates show as ``<0.01%``."""
    if 0 < rate < 0.0001:
        return "<0.01%"
    return f"{100 * rate:.2f}".rstrip("0").rstrip(".") + "%"


def _score(report: QualityReport) -> str:
    return f"{report.quality_score:.2f}".rstrip("0").rstrip(".")


def _failing(report: QualityReport) -> list[CheckResult]:
    """Failed checks, most severe first, then most failing rows first."""
    bad = [c for c in report.checks if not c.passed]
    return sorted(bad, key=lambda c: (_SEVERITY_ORDER.get(c.severity, 9), -c.failed, c.check))


def _cell(value: object) -> str:
    return "null" if value is None else str(value)


def _examples_html(examples: list) -> str:
    """Small table of example rows; the columns are the union of their keys."""
    rows = [ex if isinstance(ex, dict) else {"value": ex} for ex in examples]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{escape(str(k))}</th>" for k in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(k, '')))}</td>" for k in cols) + "</tr>" for r in rows)
    return f'<table class="examples"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _failing_card(c: CheckResult) -> str:
    sev = escape(c.severity)
    examples = _examples_html(c.examples) if c.examples else '<p class="none">No examples recorded.</p>'
    return (
        f'<div class="card {sev}" data-failing-check="{escape(c.check)}">'
        f'<h3><span class="badge {sev}">{sev}</span><code>{escape(c.check)}</code></h3>'
        f"<p>{escape(c.message)}</p>"
        f'<p class="stat"><b>{c.failed:,}</b> of {c.total:,} failing ({_pct(c.rate)})</p>{examples}</div>'
    )


def _schema_row(s: SchemaChange) -> str:
    mark = '<span class="badge breaking">breaking</span>' if s.breaking else '<span class="badge ok">compatible</span>'
    cells = f"<td>{escape(s.change)}</td><td><code>{escape(s.column)}</code></td><td>{escape(s.detail)}</td>"
    return f'<tr class="{"breaking" if s.breaking else "compatible"}">{cells}<td>{mark}</td></tr>'


def _check_row(c: CheckResult) -> str:
    """One "All checks" row; severity badges of passed checks are greyed out."""
    ok = '<span class="yes">✓</span>' if c.passed else '<span class="no">✗</span>'
    sev = escape(c.severity)
    badge = f'<span class="badge {sev}{" muted" if c.passed else ""}">{sev}</span>'
    return (
        f'<tr data-check="{escape(c.check)}" data-passed="{"true" if c.passed else "false"}">'
        f"<td><code>{escape(c.check)}</code></td><td>{escape(c.kind)}</td><td>{escape(c.column or '')}</td>"
        f'<td>{badge}</td><td>{ok}</td><td class="num">{c.failed:,}</td><td class="num">{_pct(c.rate)}</td></tr>'
    )


def render_html(report: QualityReport) -> str:
    """Render the report as one self-contained HTML page (inline CSS, no scripts, all values escaped)."""
    ds, run = escape(report.dataset), escape(report.run_id)
    gate = '<span class="gate pass">PASSED</span>' if report.gate_passed else '<span class="gate fail">FAILED</span>'
    counts = [
        ("rows in", report.rows_in),
        ("clean", report.rows_clean),
        ("quarantined", report.rows_quarantined),
        ("dropped duplicates", report.rows_dropped_duplicates),
    ]
    counts_html = "".join(f"<div><b>{n:,}</b><span>{escape(label)}</span></div>" for label, n in counts)
    failing = _failing(report)
    failing_html = "".join(map(_failing_card, failing)) or '<p class="none">No failing checks.</p>'
    schema_html = ""
    if report.schema_changes:
        schema_html = (
            "<h2>Schema changes</h2><table><thead><tr><th>change</th><th>column</th><th>detail</th><th></th>"
            f"</tr></thead><tbody>{''.join(map(_schema_row, report.schema_changes))}</tbody></table>"
        )
    head = "<th>check</th><th>kind</th><th>column</th><th>severity</th><th>passed</th><th>failed</th><th>rate</th>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data quality: {ds} — run {run}</title><style>{_CSS}</style></head>
<body>
<h1>Data quality: {ds}</h1>
<div class="meta">run <code>{run}</code> · created {escape(report.created)}</div>
<header><div><div class="score" title="quality score">{_score(report)}<small>%</small></div>
<div class="score-label">quality score</div></div>{gate}
<div class="counts">{counts_html}</div></header>
<p class="definition">{escape(SCORE_DEFINITION)}</p>
<h2>Failing checks ({len(failing)})</h2>
{failing_html}
{schema_html}
<h2>All checks ({len(report.checks)})</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(map(_check_row, report.checks))}</tbody></table>
</body></html>
"""


def _md(value: object) -> str:
    """Make a value safe for a Markdown table cell: escape pipes, flatten newlines."""
    return _cell(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def render_markdown(report: QualityReport) -> str:
    """Render a compact Markdown summary (score, gate, row counts, failing checks, schema changes)."""
    gate = "✅ PASSED" if report.gate_passed else "❌ FAILED"
    lines = [
        f"# Data quality: {_md(report.dataset)} (run `{_md(report.run_id)}`)",
        "",
        f"**Quality score: {_score(report)}%** · gate **{gate}**",
        "",
        f"Rows in: {report.rows_in:,} · clean: {report.rows_clean:,} · quarantined: {report.rows_quarantined:,}"
        f" · dropped duplicates: {report.rows_dropped_duplicates:,}",
        "",
    ]
    failing = _failing(report)
    if failing:
        lines += [f"## Failing checks ({len(failing)})", "", "| check | severity | failed | rate | message |"]
        lines.append("|---|---|---:|---:|---|")
        lines += [
            f"| `{_md(c.check)}` | {_md(c.severity)} | {c.failed:,} | {_pct(c.rate)} | {_md(c.message)} |"
            for c in failing
        ]
    else:
        lines.append(f"All {len(report.checks)} checks passed.")
    if report.schema_changes:
        lines += ["", "## Schema changes", "", "| change | column | detail | breaking |", "|---|---|---|---|"]
        lines += [
            f"| {_md(s.change)} | `{_md(s.column)}` | {_md(s.detail)} | {'**yes**' if s.breaking else 'no'} |"
            for s in report.schema_changes
        ]
    return "\n".join(lines) + "\n"
