"""The catalog as one self-contained HTML page in the periodic report's style (its CSS and cell helpers, reused):
inline CSS, no scripts, no fetches, so it opens offline and in the Kubeflow UI's artifact viewer.

Sections are ``<section data-section="datasets|feature_views|feature_services|models">``; every object is a
``<tr data-name="…">`` row, and its schema a ``<details>`` list. Every value from the workspace is escaped.
"""

from __future__ import annotations

from html import escape

from kfloop.report.render import _CSS, _badge, _card, _day, _e, _none

__all__ = ["SECTIONS", "render_html"]

#: (record key, heading) of each section, in page order.
SECTIONS = (
    ("datasets", "Datasets"),
    ("feature_views", "Feature views"),
    ("feature_services", "Feature services"),
    ("models", "Models"),
)
_EXTRA_CSS = "details summary{cursor:pointer;color:#1c7ed6}details ul{margin:4px 0;padding-left:18px;font-size:12px}"


def _owner(entry: dict) -> str:
    if entry.get("owner") is None:
        return _badge("no owner", "warn")
    note = ' <span class="small">(project)</span>' if entry.get("owner_inherited") else ""
    return f"{_e(entry['owner'])}{note}"


def _schema(schema: dict) -> str:
    if not schema:
        return '<span class="none">unknown</span>'
    items = "".join(f"<li><code>{_e(c)}</code> {_e(t)}</li>" for c, t in schema.items())
    return f"<details><summary>{len(schema)} column(s)</summary><ul>{items}</ul></details>"


def _quality(q: dict | None) -> str:
    if not q or q.get("score") is None:
        return '<span class="none">not measured</span>'
    if "metric" in q:
        return f"{_e(q['metric'])} {q['score']:.4f} <span class='small'>({_e(q['split'])})</span>"
    of = f" <span class='small'>(of {_e(q['of'])})</span>" if q.get("of") else ""
    kind = "ok" if q["score"] >= 99 else "warn" if q.get("gate_passed") else "bad"
    score = f"{q['score']:.2f}%"
    return f"{_badge(score, kind)}{of}"


def _row(entry: dict, cells: list[str]) -> str:
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr data-name="{_e(entry["name"])}" data-kind="{_e(entry["kind"])}">{tds}</tr>'


def _table(head: list[str], rows: list[str]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _datasets(record: dict) -> str:
    rows = []
    for d in record["datasets"]:
        f = d["freshness"]
        changed = f"<span class='small'>changed {_e(_day(f['last_change']))}</span>"
        fresh = f"newest event {_e(_day(f['newest_event']))}<br>{changed}"
        rows.append(
            _row(
                d,
                [
                    f"<code>{_e(d['name'])}</code>",
                    _badge(d["kind"].replace("_", " "), "candidate"),
                    _owner(d),
                    _e(d.get("description")),
                    _schema(d["schema"]),
                    f"{d['rows']:,} rows · {d['files']:,} file(s)",
                    fresh,
                    _quality(d["quality"]),
                ],
            )
        )
    head = ["Dataset", "Kind", "Owner", "Description", "Schema", "Size", "Freshness", "Quality score"]
    return _table(head, rows) if rows else _none("No dataset is configured.")


def _views(record: dict) -> str:
    rows = []
    for v in record["feature_views"]:
        f = v["freshness"]
        state = _badge("stale", "bad") if f["stale"] else _badge("fresh", "ok")
        lag = "-" if f["lag_seconds"] is None else f"{f['lag_seconds']:.0f} s"
        fresh = f"{state} online until {_e(_day(f['newest_online']))}<br><span class='small'>lag {lag}</span>"
        rows.append(
            _row(
                v,
                [
                    f"<code>{_e(v['name'])}</code>",
                    f"<code>{_e(v['entity'])}</code> · ttl {_e(v['ttl'])}",
                    _owner(v),
                    _e(v.get("description")),
                    _schema(v["schema"]),
                    fresh,
                    _quality(v["quality"]),
                ],
            )
        )
    head = ["Feature view", "Entity", "Owner", "Description", "Features", "Freshness", "Quality score (source)"]
    return _table(head, rows) if rows else _none("No feature view is configured.")


def _services(record: dict) -> str:
    rows = [
        _row(
            s,
            [
                f"<code>{_e(s['name'])}</code>",
                _owner(s),
                _e(s["description"]),
                _e(", ".join(s["views"])),
                _schema(s["schema"]),
            ],
        )
        for s in record["feature_services"]
    ]
    return _table(["Feature service", "Owner", "Description", "Views", "Features"], rows)


def _models(record: dict) -> str:
    out = []
    for m in record["models"]:
        head = _table(
            ["Model", "Owner", "Description", "Inputs", "Champion", "Quality score (champion)"],
            [
                _row(
                    m,
                    [
                        f"<code>{_e(m['name'])}</code> <span class='small'>{_e(m['task'])}, "
                        f"{_e(m['framework'])}</span>",
                        _owner(m),
                        _e(m.get("description")),
                        _schema(m["schema"]),
                        _e(m["champion"] or "none"),
                        _quality(m["quality"]),
                    ],
                )
            ],
        )
        versions = [
            f'<tr data-version="{_e(v["version"])}"><td><code>{_e(v["version"])}</code></td>'
            f"<td>{_badge(v['stage'])}</td>"
            f"<td>{_e(_day(v['registered']))}</td><td><code>{_e(v['training_set'])}</code></td>"
            f"<td>{_quality(v['quality'])}</td></tr>"
            for v in m["versions"]
        ]
        table = _table(["Version", "Stage", "Registered", "Training set", "Quality score"], versions)
        out.append(
            head
            + (
                f"<h3>Versions of <code>{_e(m['name'])}</code></h3>{table}"
                if versions
                else _none("No version registered yet.")
            )
        )
    return "".join(out) or _none("No model is configured.")


_RENDER = {"datasets": _datasets, "feature_views": _views, "feature_services": _services, "models": _models}


def render_html(record: dict) -> str:
    """The catalog record (:func:`kfloop.catalog.collect.collect`) as one self-contained HTML page."""
    entries = [e for key, _ in SECTIONS for e in record[key]]
    unowned = sum(1 for e in entries if e.get("owner") is None)
    stale = sum(1 for v in record["feature_views"] if v["freshness"]["stale"])
    cards = [
        _card("datasets", str(len(record["datasets"]))),
        _card("feature views", str(len(record["feature_views"]))),
        _card("model versions", str(sum(len(m["versions"]) for m in record["models"]))),
        _card("without an owner", str(unowned), "warn" if unowned else "ok"),
        _card("stale feature views", str(stale), "bad" if stale else "ok"),
    ]
    sections = "".join(
        f'<section id="{name}" data-section="{name}"><h2>{escape(title)}</h2>{_RENDER[name](record)}</section>'
        for name, title in SECTIONS
    )
    project = _e(record["project"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Catalog: {project}</title><style>{_CSS}{_EXTRA_CSS}</style></head>
<body>
<h1>Catalog: {project}</h1>
<div class="meta">owner {_e(record["owner"])} · workspace <code>{_e(record["workspace"])}</code> ·
as of {_e(_day(record["created"]))} UTC</div>
<section id="summary" data-section="summary"><div class="cards">{"".join(cards)}</div></section>
{sections}
<p class="small">Made by <code>kfloop catalog</code>; the same data is in <code>catalog.json</code> beside this
page.</p>
</body></html>
"""
