"""The periodic report as one self-contained HTML page (inline CSS and SVG, no scripts, no fetches: it opens offline,
in the Kubeflow UI's artifact viewer and in a mail client alike) and as a one-paragraph text summary.

Each section is ``<section data-section="summary|data|features|models|drift|slo">``; a section with nothing to
show says so in a ``.none`` paragraph. Every value from the workspace is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from kfloop.report import svg

__all__ = ["SECTIONS", "render_html", "summary_line"]

#: The sections of the page, in order: (id, heading).
SECTIONS = (
    ("summary", "Summary"),
    ("data", "Data volume and quality"),
    ("features", "Feature freshness"),
    ("models", "Model versions"),
    ("drift", "Drift episodes and retrains"),
    ("slo", "SLO budgets"),
)
#: Most rows a table lists (the newest); the plots show every point.
MAX_ROWS = 40

_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:#1f2933;background:#f5f7fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}h3{font-size:15px;margin:14px 0 6px}
.meta{color:#52606d;font-size:13px}.meta code,td code{background:#e4e7eb;padding:1px 5px;border-radius:4px}
section{background:#fff;border:1px solid #d9e2ec;border-radius:10px;padding:16px 22px;margin-top:16px;
 break-inside:avoid-page}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 150px;border:1px solid #d9e2ec;border-radius:8px;padding:10px 14px;background:#fbfcfd}
.card b{display:block;font-size:22px;line-height:1.2}.card span{font-size:12px;color:#52606d;text-transform:uppercase}
.card.bad{border-left:5px solid #c92a2a}.card.warn{border-left:5px solid #f08c00}.card.ok{border-left:5px solid #2f9e44}
.notice{background:#fff4e6;border:1px solid #f08c00;border-radius:8px;padding:10px 14px;margin-top:16px}
table{border-collapse:collapse;font-size:13px;width:100%;margin:8px 0}
th,td{border:1px solid #d9e2ec;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;padding:2px 8px;
 border-radius:10px;color:#fff;background:#9aa5b1}
.badge.champion,.badge.ok,.badge.retrain{background:#2f9e44}.badge.candidate{background:#1c7ed6}
.badge.rejected,.badge.bad,.badge.failed,.badge.drift{background:#c92a2a}.badge.warn,.badge.no{background:#f08c00}
.none{color:#52606d;font-style:italic}.small{font-size:12px;color:#52606d}
svg.plot{display:block;max-width:100%;height:auto;margin:6px 0}
ul.problems{color:#c92a2a;font-size:12px}
"""
_STAGE_COLOR = {
    "champion": svg.COLORS["green"],
    "candidate": svg.COLORS["blue"],
    "rejected": svg.COLORS["red"],
    "archived": svg.COLORS["grey"],
}
_VERDICT_COLOR = {"drift": svg.COLORS["red"], "no_drift": svg.COLORS["green"], "insufficient_data": "#d9e2ec"}


# --- formatting ----------------------------------------------------------------------------------------------
def _e(value: object) -> str:
    return escape("-" if value is None else str(value))


def _int(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _pct(rate: float | None, digits: int = 2) -> str:
    if rate is None:
        return "-"
    if 0 < abs(rate) < 10 ** -(digits + 2):
        return f"<{10**-digits}%"
    return f"{100 * rate:.{digits}f}".rstrip("0").rstrip(".") + "%"


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _seconds(s: float | None) -> str:
    """A duration in its largest sensible unit: 42 s, 12.5 min, 3.2 h, 2.1 d."""
    if s is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def _day(iso: str | None) -> str:
    """``2026-01-05T07:00:00+00:00`` → ``2026-01-05 07:00`` (UTC, as the records keep it)."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _table(head: Sequence[str], rows: Iterable[str], total: int, what: str) -> str:
    """A table of the newest :data:`MAX_ROWS` rows (``rows`` already cut), saying how many older ones are left out."""
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    more = (
        f'<p class="small">{total - MAX_ROWS:,} earlier {escape(what)} not listed (in the JSON data).</p>'
        if total > MAX_ROWS
        else ""
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _none(text: str) -> str:
    return f'<p class="none">{escape(text)}</p>'


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<p class="small">Records that could not be read:</p><ul class="problems">{items}</ul>'


def _level(value: float, good: float) -> str:
    """The card class of a share: ``ok`` at or above ``good``, ``warn`` above zero, ``bad`` at or below it."""
    return "ok" if value >= good else "warn" if value > 0 else "bad"


def _badge(text: str, kind: str | None = None) -> str:
    return f'<span class="badge {escape(kind or text)}">{escape(text)}</span>'


def _span(period: dict) -> tuple[str, str]:
    return _day(period["start"]), _day(period["end"])


def _at(iso: str) -> datetime:
    at = datetime.fromisoformat(iso)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _xs(times: Sequence[str | None], period: dict) -> list[float]:
    """Where each time falls in the period: 0 at its start, 1 at its end (a missing time at the start)."""
    start, end = _at(period["start"]), _at(period["end"])
    return [(_at(t) - start) / (end - start) if t else 0.0 for t in times]


# --- sections ------------------------------------------------------------------------------------------------
def _card(label: str, value: str, kind: str = "") -> str:
    body = f"<b>{escape(value)}</b><span>{escape(label)}</span>"
    return f'<div class="card {kind}" data-card="{escape(label)}">{body}</div>'


def _summary(r: dict) -> str:
    s = r["summary"]
    q = s["quality_last"]
    champion = "none"
    if s["champion"]:
        value = s["champion_value"]
        champion = f"{s['champion']}" + (f" · {s['champion_metric']} {value:.3f}" if value is not None else "")
    budget = s["slo_lowest_budget"]
    cards = [
        _card("rows ingested", f"{s['rows_read']:,}", ""),
        _card(
            "quarantined (latest validate)",
            _pct(s["quarantine_rate"]),
            "" if s["rows_quarantined"] is None else "warn" if s["rows_quarantined"] else "ok",
        ),
        _card("quality score (latest)", "-" if q is None else f"{q:.2f}%", "" if q is None else _level(q / 100, 0.99)),
        _card("stale feature views", f"{s['stale_views']} of {s['views']}", "bad" if s["stale_views"] else "ok"),
        _card("champion", champion, "" if s["champion"] else "warn"),
        _card("new versions", str(s["versions_new"])),
        _card("drift episodes", str(s["drift_episodes"]), "bad" if s["drift_episodes"] else "ok"),
        _card("retrains started / refused", f"{s['retrains_started']} / {s['retrains_refused']}"),
        _card(
            "lowest SLO budget left",
            "-" if budget is None else _pct(budget, 0),
            "" if budget is None else "bad" if budget <= 0 else "warn" if budget < 0.5 else "ok",
        ),
    ]
    notice = ""
    if s["empty"]:
        notice = (
            '<div class="notice" data-empty="true"><b>Nothing was recorded for this model in this period.</b> '
            "No ingest run, quality report, model version, drift check, retrain decision or online feature was "
            f"found in the workspace ({_e(r['workspace'])}) between {_e(_day(r['period']['start']))} and "
            f"{_e(_day(r['period']['end']))} UTC. Run the loop (<code>kfloop run</code>), or check that the config "
            "points at the workspace the loop writes (<code>storage</code>) and names the model "
            "(<code>training.model_name</code> or <code>--model</code>).</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>{notice}'


def _dataset(d: dict, period: dict) -> str:
    runs, quality = d["ingest_runs"], d["quality"]
    span = _span(period)
    head = f"<h3>Dataset <code>{_e(d['dataset'])}</code></h3>"
    head += (
        f'<p class="small">{_int(d["rows_now"])} rows in the lake now · newest event {_e(_day(d["newest_event"]))} · '
        f"this period: {len(runs)} ingest run(s), {_int(d['totals']['rows_read'])} rows read, "
        f"{_int(d['totals']['rows_written'])} written, {_int(d['totals']['rows_quarantined'])} unreadable, "
        f"{_int(d['totals']['rows_too_late'])} too late</p>"
    )
    if not runs and not quality:
        return head + _none("No ingest run and no validate run in this period.")
    out = [head]
    if runs:
        out.append(
            svg.stacked_bars(
                f"ingest-{d['dataset']}",
                f"Rows per ingest run of {d['dataset']}: written, unreadable (quarantined by ingest), too late",
                [r["run_id"] or "?" for r in runs],
                [
                    ("written", [r["rows_written"] for r in runs], svg.COLORS["blue"]),
                    ("unreadable", [r["rows_quarantined"] for r in runs], svg.COLORS["violet"]),
                    ("too late", [r["rows_too_late"] for r in runs], svg.COLORS["orange"]),
                ],
                x_labels=span,
                xs=_xs([r["finished"] for r in runs], period),
            )
        )
    if quality:
        out.append(
            svg.lines(
                f"quality-{d['dataset']}",
                f"Quality score per validate run of {d['dataset']} (%)",
                [("quality score %", [q["score"] for q in quality], svg.COLORS["green"])],
                x_labels=span,
                xs=_xs([q["created"] for q in quality], period),
                floor_zero=False,
            )
        )
        rows = [
            f'<tr data-run="{_e(q["run_id"])}"><td><code>{_e(q["run_id"])}</code></td>'
            f'<td>{_e(_day(q["created"]))}</td><td class="num">{q["score"]:.2f}</td>'
            f"<td>{_badge('passed', 'ok') if q['gate_passed'] else _badge('failed')}</td>"
            f'<td class="num">{_int(q["rows_in"])}</td><td class="num">{_int(q["rows_clean"])}</td>'
            f'<td class="num">{_int(q["rows_quarantined"])}</td>'
            f"<td>{_e(', '.join(q['failed_checks']) or '-')}</td></tr>"
            for q in reversed(quality[-MAX_ROWS:])
        ]
        head_row = ("validate run", "at (UTC)", "score %", "gate", "rows in", "clean", "quarantined", "failed checks")
        out.append(_table(head_row, rows, len(quality), "validate runs"))
    else:
        out.append(_none("No validate run (quality report) in this period."))
    return "".join(out)


def _data(r: dict) -> str:
    return "".join(_dataset(d, r["period"]) for d in r["data"]["datasets"]) + _problems(r["data"]["problems"])


def _features(r: dict) -> str:
    f = r["features"]
    if not f["views"]:
        return _none("No feature views are configured (features.views, features.tables).") + _problems(f["problems"])
    sla = r["freshness_sla_seconds"]
    rows = []
    for v in f["views"]:
        status = _badge("stale", "bad") if v["stale"] else _badge("fresh", "ok")
        over = f"{v['minutes_over_sla']:,} of {v['minutes']:,}" if f["history"] else "-"
        rows.append(
            f'<tr data-view="{_e(v["view"])}"><td><code>{_e(v["view"])}</code></td><td>{status}</td>'
            f'<td class="num">{_seconds(v["lag_seconds"])}</td><td class="num">{_seconds(v["sla_seconds"])}</td>'
            f'<td>{_e(_day(v["newest_online"]))}</td><td class="num">{_int(v["online_entities"])}</td>'
            f'<td class="num">{_int(v["events"]) if f["history"] else "-"}</td><td class="num">{over}</td></tr>'
        )
    head = ("view", "now", "lag now", "SLA", "newest online (UTC)", "online entities", "rows written")
    head += ("minutes p99 > SLA",)
    out = [
        '<p class="small">Lag now: newest event computed offline minus newest event online. The trend: seconds from '
        "an event to its online write, per bucket of the period (median of the minutes' p50, highest p99).</p>",
        _table(head, rows, len(rows), "views"),
    ]
    if not f["history"]:
        out.append(_none(f"Lag trend not available: {f['history_note']}."))
    else:
        for v in f["views"]:
            trend = v["trend"]
            if not trend:
                out.append(_none(f"{v['view']}: no online writes in this period (no lag samples)."))
                continue
            out.append(f"<h3><code>{_e(v['view'])}</code> lag (seconds)</h3>")
            out.append(
                svg.lines(
                    f"freshness-{v['view']}",
                    f"Event-to-online lag of {v['view']}: p50 and p99 per bucket, SLA dashed",
                    [
                        ("p50", [t["lag_p50"] for t in trend], svg.COLORS["blue"]),
                        ("p99", [t["lag_p99"] for t in trend], svg.COLORS["orange"]),
                    ],
                    x_labels=_span(r["period"]),
                    xs=_xs([t["at"] for t in trend], r["period"]),
                    threshold=("SLA", sla),
                )
            )
    return "".join(out) + _problems(f["problems"])


def _models(r: dict) -> str:
    m = r["models"]
    if not m["versions"]:
        return _none(f"Model {r['model']} has no registered version.") + _problems(m["problems"])
    metric = m["compared"]
    better = "higher" if m["higher_is_better"] else "lower"
    out = [
        f'<p class="small">{m["versions_total"]} version(s) registered; the newest {len(m["versions"])} shown. '
        f"Champion: <b>{_e(m['champion'] or 'none')}</b>. Test metrics are the promotion gate's (newest test split "
        f"at the time), validation metrics the trainer's; the gate compares <code>{_e(metric)}</code> "
        f"({better} is better).</p>",
        svg.bars(
            "model-metric",
            f"{metric} per version (test, else validation), colored by stage",
            [
                (v["version"], v["test"].get(metric, v["validation"].get(metric)), _STAGE_COLOR.get(v["stage"], "#999"))
                for v in m["versions"]
            ],
        ),
    ]
    rows = []
    for v in reversed(m["versions"][-MAX_ROWS:]):
        metrics = "".join(
            f'<td class="num">{_metric(v["test"].get(k))}<br><span class="small">{_metric(v["validation"].get(k))}'
            "</span></td>"
            for k in m["metrics"]
        )
        gate = "-" if v["promoted"] is None else _badge("promoted", "ok") if v["promoted"] else _badge("rejected")
        reasons = "; ".join(v["reasons"])
        rows.append(
            f'<tr data-version="{_e(v["version"])}"><td><b>{_e(v["version"])}</b>{" (new)" if v["new"] else ""}</td>'
            f"<td>{_badge(v['stage'])}</td><td>{_e(_day(v['registered']))}</td><td>{_e(v['framework'])}</td>"
            f'{metrics}<td>{gate}</td><td class="small">{_e(reasons or "-")}</td></tr>'
        )
    head = ["version", "stage", "registered (UTC)", "framework", *(f"{k} test / val" for k in m["metrics"])]
    out.append(_table([*head, "gate", "reasons"], rows, len(m["versions"]), "versions"))
    changes = m["stage_changes"]
    if changes:
        items = "".join(
            f"<li>{_e(_day(c['at']))}: {_e(c['version'])} {_e(c['event'])}"
            + (f" (before: {_e(c['previous'])})" if c.get("previous") else "")
            + (f" — {_e(c['reason'])}" if c.get("reason") else "")
            + "</li>"
            for c in changes
        )
        out.append(f"<h3>Stage changes this period</h3><ul>{items}</ul>")
    else:
        out.append(_none("No promotion, rejection or rollback in this period."))
    return "".join(out) + _problems(m["problems"])


def _drift(r: dict) -> str:
    d = r["drift"]
    checks = d["checks"]
    span = _span(r["period"])
    if not checks and not d["decisions"]:
        return _none("No drift check and no retrain decision in this period.") + _problems(d["problems"])
    counts = ", ".join(f"{n:,} {_e(v)}" for v, n in sorted(d["by_verdict"].items()))
    out = [
        f'<p class="small">{len(checks):,} drift check(s): {counts or "none"}. '
        f"{d['retrains_started']} retrain(s) started, {d['retrains_refused']} refused on drift.</p>",
        svg.verdict_strip(
            "drift-verdicts",
            "Drift verdict of each check, in order (red drift, green no drift, grey insufficient data)",
            [str(c["verdict"]) for c in checks],
            _VERDICT_COLOR,
            x_labels=(_day(checks[0]["at"]), _day(checks[-1]["at"])) if checks else ("", ""),
        ),
        svg.lines(
            "drift-share",
            "Share of drifted columns per check; the drift threshold dashed",
            [("drifted share", [c["share"] for c in checks], svg.COLORS["red"])],
            x_labels=span,
            xs=_xs([c["at"] for c in checks], r["period"]),
            threshold=("drift at", d["drift_share"]),
        ),
    ]
    episodes = d["episodes"]
    if episodes:
        rows = [
            f'<tr data-episode="{_e(e["first"])}"><td>{_e(e["version"])}</td><td>{_e(_day(e["first"]))}</td>'
            f"<td>{_e(_day(e['last']))}</td><td>{_e(_day(e['ended'])) if e['ended'] else _badge('ongoing', 'drift')}"
            f'</td><td class="num">{e["checks"]}</td><td class="num">{_metric(e["max_share"])}</td>'
            f"<td>{_e(', '.join(e['columns']) or '-')}</td></tr>"
            for e in reversed(episodes[-MAX_ROWS:])
        ]
        head = ("version", "first drift", "last drift", "ended", "checks", "max share", "drifted columns")
        out.append("<h3>Drift episodes</h3>" + _table(head, rows, len(episodes), "episodes"))
    else:
        out.append(_none("No drift episode in this period."))
    decisions = d["decisions"]
    if decisions:
        rows = [
            f'<tr data-decision="{_e(a["decision"])}"><td>{_e(_day(a["at"]))}</td><td>{_badge(str(a["decision"]))}</td>'
            f"<td>{_e(a['model_version'])}</td><td>{_e(a['episode'])}</td><td><code>{_e(a['run_id'])}</code></td>"
            f'<td class="small">{_e(a["reason"])}</td></tr>'
            for a in reversed(decisions[-MAX_ROWS:])
        ]
        head = ("at (UTC)", "decision", "version", "episode", "run", "reason")
        out.append("<h3>Retrain decisions on drift</h3>" + _table(head, rows, len(decisions), "decisions"))
    else:
        out.append(_none("No retrain decision on a drift verdict in this period."))
    return "".join(out) + _problems(d["problems"])


def _slo(r: dict) -> str:
    s = r["slo"]
    if not s["available"]:
        return _none(f"SLO budgets not available: {s['note']}.")
    if not s["objectives"]:
        return _none("No SLO is defined (slo).")
    rows = []
    for o in s["objectives"]:
        left = o["budget_remaining"]
        state = ""
        if left is not None and left <= 0:
            state = _badge("overspent" if left < 0 else "spent", "bad")
        rows.append(
            f'<tr data-slo="{_e(o["name"])}"><td><b>{_e(o["name"])}</b></td><td class="num">{_pct(o["objective"], 3)}'
            f'</td><td>{_e(o["window"])}</td><td class="num">{_pct(o["sli"], 3)}</td>'
            f'<td class="num">{o["good"]:,.0f} / {o["total"]:,.0f}</td>'
            f"<td>{svg.budget_bar('budget-' + str(o['name']), left)}</td>"
            f'<td class="num">{_pct(left, 1)} {state}</td><td>{_e(o["source"])}</td>'
            f'<td class="small">{_e(o["detail"])}</td></tr>'
        )
    head = ("objective", "target", "window", "SLI", "good / total", "error budget", "left", "source", "detail")
    return _table(head, rows, len(rows), "objectives")


_RENDER = {"summary": _summary, "data": _data, "features": _features, "models": _models, "drift": _drift, "slo": _slo}


def render_html(record: dict) -> str:
    """The report record (:func:`kfloop.report.collect.collect`) as one self-contained HTML page."""
    model, period = _e(record["model"]), record["period"]
    start, end = _span(period)
    sections = "".join(
        f'<section id="{name}" data-section="{name}"><h2>{escape(title)}</h2>{_RENDER[name](record)}</section>'
        for name, title in SECTIONS
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Report: {model} — {escape(start)} to {escape(end)}</title><style>{_CSS}</style></head>
<body>
<h1>Periodic report: {model}</h1>
<div class="meta">project <code>{_e(record["project"])}</code> · {escape(start)} to {escape(end)} UTC
({_e(period["length"])}) · report <code>{_e(record["report_id"])}</code></div>
{sections}
<p class="small">Made by <code>kfloop report</code> at {_e(_day(record["created"]))} UTC; the data of every plot and
table is in <code>{_e(record["report_id"])}.json</code> beside this page.</p>
</body></html>
"""


def summary_line(record: dict) -> str:
    """One line for a chat message or a terminal: the period's headline numbers."""
    s = record["summary"]
    if s["empty"]:
        return f"nothing recorded for {record['model']} in the last {record['period']['length']}"
    parts = [f"{s['ingest_runs']} ingest run(s), {s['rows_read']:,} rows read"]
    if s["quarantine_rate"] is not None:
        parts.append(f"{_pct(s['quarantine_rate'])} quarantined by the contract")
    if s["quality_last"] is not None:
        parts.append(f"quality {s['quality_last']:.2f}%")
    champion = s["champion"] or "no champion"
    if s["champion"] and s["champion_value"] is not None:
        champion += f" ({s['champion_metric']} {s['champion_value']:.3f})"
    parts.append(f"champion {champion}, {s['versions_new']} new version(s)")
    parts.append(
        f"{s['drift_episodes']} drift episode(s), {s['retrains_started']} retrain(s) started, "
        f"{s['retrains_refused']} refused"
    )
    if s["views"]:
        parts.append(f"{s['stale_views']} of {s['views']} feature view(s) stale")
    if s["slos"]:
        parts.append(f"{s['slos_overspent']} of {s['slos']} SLO budget(s) overspent")
    return "; ".join(parts)
