"""One periodic report, end to end: collect → render → (print to PDF) → store → send. What ``kfloop report``, the
report pipeline step and the report CronWorkflow run.

A report is an event, not a resource: every run makes a new one under its own id
(``reports/<model>/periodic/<id>.{html,json,pdf}``), and ``latest.json`` points at the newest (its record). The PDF
is printed before anything is stored, so a missing Chromium leaves no half-written report; the record is written
after the page and the PDF and ``latest.json`` last, so whatever it names exists.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from kfloop import layout
from kfloop.config import Config
from kfloop.monitoring.notify import Delivery
from kfloop.report.collect import collect, record_json
from kfloop.report.deliver import send_report, write_metrics
from kfloop.report.render import render_html
from kfloop.storage import Storage

__all__ = ["ReportResult", "make_report", "report_id_at"]


@dataclass(frozen=True)
class ReportResult:
    """A stored report: its record, its page, where each format is, and what the webhooks said (None: not sent;
    empty: no webhook lists the ``report`` event)."""

    record: dict
    html: str
    pdf: bytes | None
    keys: dict[str, str]
    uris: dict[str, str]
    deliveries: list[Delivery] | None


def report_id_at(now: datetime) -> str:
    """A time-sortable, unique report id (the time the report was made, UTC, and randomness)."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def make_report(
    config: Config,
    storage: Storage,
    *,
    model: str | None = None,
    period: str | None = None,
    pdf: bool | None = None,
    send: bool | None = None,
    now: datetime | None = None,
    prometheus_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ReportResult:
    """Make, store and (``send``, default ``report.send``) deliver ``model``'s report over ``period`` (default
    ``report.period``) ending ``now``; ``pdf`` (default ``report.pdf``) also prints it to PDF."""
    from kfloop.report.pdf import print_pdf

    now = (now or datetime.now(UTC)).astimezone(UTC)
    pdf = config.report.pdf if pdf is None else pdf
    send = config.report.send if send is None else send
    report_id = report_id_at(now)
    record = collect(config, storage, report_id, model=model, period=period, now=now, prometheus_url=prometheus_url)
    model = record["model"]
    html = render_html(record)
    document = print_pdf(html) if pdf else None
    keys = {ext: layout.periodic_report_key(model, report_id, ext) for ext in ("html", "json")}
    if document is not None:
        keys["pdf"] = layout.periodic_report_key(model, report_id, "pdf")
    record["files"] = dict(keys)
    storage.write_text(keys["html"], html)
    if document is not None:
        storage.write_bytes(keys["pdf"], document)
    body = record_json(record)
    storage.write_text(keys["json"], body)
    storage.write_text(layout.latest_key(layout.periodic_report_prefix(model)), body)
    uris = {ext: storage.uri(key) for ext, key in keys.items()}
    deliveries = None
    if send:
        deliveries = send_report(config, storage, record, uris, environ=environ, now=now)
    if not deliveries:  # a send rewrites the metrics itself; otherwise the report's own timestamp moves
        write_metrics(storage, model)
    return ReportResult(record, html, document, keys, uris, deliveries)
