"""Sending a periodic report to the alert webhooks, and its delivery metrics.

The message is Slack-compatible JSON (``{"text", "blocks"}``, like every notification): the period's headline
numbers and where the report is (its HTML, JSON and PDF in the workspace). It goes to each of ``alerts.webhooks``
whose ``events`` include ``report``, through :mod:`kfloop.monitoring.notify`'s delivery (the timeout, retries and
backoff of ``alerts``; a 4xx is final), and an undelivered one is logged and recorded under
``monitoring/<model>/notifications/`` like any other.

Each send is also an append-only record (``reports/<model>/periodic/deliveries/<id>.json``), and the metrics file
``monitoring/<model>/report.prom`` is rendered from all of them: ``kfloop_report_delivery_total{model,outcome}``
counts every webhook delivery (``delivered``/``failed``), so two overlapping runs each add theirs and none is lost
to a read-modify-write of a counter.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from kfloop import layout
from kfloop.config import Config
from kfloop.monitoring import notify
from kfloop.monitoring.event_metrics import REPORT_OUTCOMES, report_delivery_metrics, report_metrics_key
from kfloop.monitoring.notify import Delivery, Notification, Post
from kfloop.report.render import summary_line
from kfloop.storage import Storage

__all__ = ["EVENT", "report_payload", "send_report", "write_metrics"]

log = logging.getLogger("kfloop.notify")

#: The event kind a webhook lists in ``alerts.webhooks[].events`` to receive periodic reports.
EVENT = "report"
_MAX_FIELDS = 10  # Slack's limit of fields in one section block


def _fields(record: dict) -> dict[str, str]:
    s = record["summary"]
    rate = "-" if s["quarantine_rate"] is None else f"{100 * s['quarantine_rate']:.2f}%"
    value = s["champion_value"]
    champion = (s["champion"] or "none") + (f" ({s['champion_metric']} {value:.3f})" if value is not None else "")
    budget = s["slo_lowest_budget"]
    fields = {
        "rows ingested": f"{s['rows_read']:,} in {s['ingest_runs']} run(s)",
        "quarantined (contract)": rate,
        "quality (latest)": "-" if s["quality_last"] is None else f"{s['quality_last']:.2f}%",
        "champion": champion,
        "new versions": str(s["versions_new"]),
        "drift episodes": f"{s['drift_episodes']} ({s['drift_verdicts']} drift verdicts of {s['drift_checks']})",
        "retrains": f"{s['retrains_started']} started, {s['retrains_refused']} refused",
        "stale feature views": f"{s['stale_views']} of {s['views']}",
        "lowest SLO budget": "-" if budget is None else f"{100 * budget:.0f}%",
    }
    return dict(list(fields.items())[:_MAX_FIELDS])


def report_payload(project: str, record: dict, uris: Mapping[str, str]) -> dict:
    """The Slack-compatible message of a report: ``text`` (what every receiver shows) and Block Kit ``blocks``.
    ``uris``: where the report is, by format (``html``, ``json``, ``pdf``)."""
    where = f"{project} / {record['model']}"
    period = record["period"]
    span = f"{period['start'][:10]} to {period['end'][:10]}"
    line = summary_line(record)
    text = f":bar_chart: [{where}] Periodic report {span}: {line}. Report: {uris.get('html', '-')}"
    links = "\n".join(f"*{fmt}*: `{uri}`" for fmt, uri in uris.items())
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Periodic report ({where})"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{span} ({period['length']}): {line}"[:3000]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in _fields(record).items()],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": links[:3000] or "-"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"kfloop · report {record['report_id']} · {record['created']}"}],
        },
    ]
    return {"text": text[:3000], "blocks": blocks}


def send_report(
    config: Config,
    storage: Storage,
    record: dict,
    uris: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    post: Post | None = None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Send the report's message to every webhook that lists ``report``; returns one :class:`Delivery` each (none
    when no webhook lists it). Never raises for a failed delivery: it is logged, recorded, and counted in the
    metrics, which are rewritten after every send."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    environ = os.environ if environ is None else environ
    out = notify.send_payload(config, EVENT, lambda: report_payload(config.project, record, uris), environ, post)
    if not out:
        return []
    model = record["model"]
    failed = [d for d in out if not d.delivered]
    for d in failed:
        log.warning("report %s to alerts.webhooks.%d not delivered: %s", record["report_id"], d.webhook, d.error)
    if failed:
        event = Notification(EVENT, summary_line(record), {"report": uris.get("html", "-")}, model=model, at=now)
        notify.record_undelivered(config, event, failed, storage)  # beside every other undelivered notification
    _append_record(storage, model, record["report_id"], out, now)
    write_metrics(storage, model)
    return out


def _append_record(storage: Storage, model: str, report_id: str, deliveries: list[Delivery], now: datetime) -> None:
    body = {"report_id": report_id, "at": now.isoformat(), "deliveries": [asdict(d) for d in deliveries]}
    while not storage.create_exclusive(
        layout.report_delivery_key(model, f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"),
        json.dumps(body, indent=2).encode(),
    ):
        pass  # the random part collided: draw again


def write_metrics(storage: Storage, model: str) -> bytes:
    """Render ``monitoring/<model>/report.prom`` from every delivery record and the newest report, and store it;
    returns it."""
    prefix = layout.periodic_report_prefix(model) + "/deliveries/"
    counts = dict.fromkeys(REPORT_OUTCOMES, 0)
    newest: dict[str, datetime] = {}
    for key in sorted(storage.list(prefix)):
        try:
            body = json.loads(storage.read_text(key))
            at = datetime.fromisoformat(body["at"])
            outcomes = ["delivered" if d["delivered"] else "failed" for d in body["deliveries"]]
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError) as err:
            log.warning("%s: not a delivery record (%s); not counted", storage.uri(key), err)
            continue
        for outcome in outcomes:
            counts[outcome] += 1
            newest[outcome] = max(newest.get(outcome, at), at)
    try:
        latest = json.loads(storage.read_text(layout.latest_key(layout.periodic_report_prefix(model))))
        reported = datetime.fromisoformat(latest["created"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        reported = None
    body = report_delivery_metrics(model, counts, newest, reported)
    storage.write_bytes(report_metrics_key(model), body)
    return body
