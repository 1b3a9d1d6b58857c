"""Webhook notifications of the loop's events, as Slack-compatible JSON (``{"text", "blocks"}``).

:func:`notify` is the one call for every event (a drift verdict, a retrain started or refused, a failed gate, a
failed pipeline, a freshness breach): it posts to each webhook of ``alerts.webhooks`` that lists the event, with
a timeout and retries (a 5xx, a 429 or no answer is retried with backoff; another 4xx is final), and never
raises into its caller: a failed delivery is logged and, with a ``storage``, recorded under
``monitoring/<model>/notifications/``. The URLs are ``${VAR}`` placeholders resolved from the environment at
send time, so no secret sits in the config.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from kfloop.config import Config
from kfloop.config.alerts import EVENT_KINDS
from kfloop.config.contract import parse_duration
from kfloop.layout import monitoring_prefix
from kfloop.storage import Storage

__all__ = ["Delivery", "Notification", "notify", "slack_payload"]

log = logging.getLogger("kfloop.notify")

_TITLES = {
    "drift": "Drift detected",
    "retrain_started": "Retraining started",
    "retrain_refused": "Retraining refused",
    "gate_failed": "Gate failed",
    "pipeline_failed": "Pipeline failed",
    "freshness_breach": "Feature freshness breached",
    "report": "Periodic report",
}
_EMOJI = {
    "drift": ":warning:",
    "retrain_started": ":arrows_counterclockwise:",
    "retrain_refused": ":no_entry:",
    "gate_failed": ":x:",
    "pipeline_failed": ":rotating_light:",
    "freshness_breach": ":hourglass:",
    "report": ":bar_chart:",
}
_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_MAX_FIELDS = 10  # Slack's limit of fields in one section block
_MAX_TEXT = 3000  # Slack's limit of a text object


@dataclass(frozen=True)
class Notification:
    """One event of the loop. ``kind``: drift | retrain_started | retrain_refused | gate_failed |
    pipeline_failed | freshness_breach | report; ``summary`` one line; ``details`` short key → value facts (shown as
    fields, the first ten)."""

    kind: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"notification kind {self.kind!r} is not one of {', '.join(EVENT_KINDS)}")


@dataclass(frozen=True)
class Delivery:
    """The outcome of one webhook delivery (the URL is never kept: it is a secret)."""

    webhook: int  # index in alerts.webhooks
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_short(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:200]
    return str(value)


def slack_payload(project: str, event: Notification) -> dict:
    """Slack's incoming-webhook JSON: ``text`` (the fallback every receiver shows) and Block Kit ``blocks``."""
    title = _TITLES[event.kind]
    where = f"{project}" + (f" / {event.model}" if event.model else "")
    text = f"{_EMOJI[event.kind]} [{where}] {title}: {event.summary}"[:_MAX_TEXT]
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title} ({where})"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": event.summary[:_MAX_TEXT] or title}},
    ]
    items = list(event.details.items())[:_MAX_FIELDS]
    if items:
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_short(v)}"[:2000]} for k, v in items]
        blocks.append({"type": "section", "fields": fields})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"kfloop · {event.kind} · {event.at.isoformat(timespec='seconds')}"}
            ],
        }
    )
    return {"text": text, "blocks": blocks}


def _resolve(url: str, environ: Mapping[str, str]) -> str:
    missing = [name for name in _PLACEHOLDER.findall(url) if not environ.get(name)]
    if missing:
        raise LookupError(f"environment variable {', '.join(missing)} is not set")
    return _PLACEHOLDER.sub(lambda m: environ[m.group(1)], url)


Post = Callable[[str, bytes, float], int]


def _post(url: str, body: bytes, timeout: float) -> int:
    response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=timeout)
    return response.status_code


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _deliver(url: str, body: bytes, timeout: float, retries: int, backoff: float, post: Post) -> tuple:
    """(delivered, attempts, last status, last error)."""
    status, error, wait = None, None, backoff
    for attempt in range(1, retries + 2):
        try:
            status, error = post(url, body, timeout), None
        except (httpx.HTTPError, OSError) as err:
            status, error = None, f"{type(err).__name__}: {err}"
        if status is not None and 200 <= status < 300:
            return True, attempt, status, None
        if status is not None:
            error = f"HTTP {status}"
            if not _retryable(status):
                return False, attempt, status, error
        if attempt <= retries:
            time.sleep(wait)
            wait *= 2
    return False, retries + 1, status, error


def notify(
    config: Config,
    event: Notification,
    *,
    storage: Storage | None = None,
    environ: Mapping[str, str] | None = None,
    post: Post | None = None,
) -> list[Delivery]:
    """Send ``event`` to every webhook that lists its kind; never raises. Returns one :class:`Delivery` per
    webhook tried. A failed one is logged (warning) and, with ``storage``, recorded as JSON under
    ``monitoring/<model>/notifications/``."""
    try:
        return _notify(config, event, storage, os.environ if environ is None else environ, post or _post)
    except Exception:  # a notification must never break the command that raised the event
        log.exception("notification %s failed", getattr(event, "kind", "?"))
        return []


def _notify(config: Config, event: Notification, storage: Storage | None, environ, post: Post) -> list[Delivery]:
    out = send_payload(config, event.kind, lambda: slack_payload(config.project, event), environ, post)
    failed = [d for d in out if not d.delivered]
    for d in failed:
        log.warning("notification %s to alerts.webhooks.%d not delivered: %s", event.kind, d.webhook, d.error)
    if failed and storage is not None:
        record_undelivered(config, event, failed, storage)
    return out


def send_payload(
    config: Config, kind: str, payload: Callable[[], dict], environ: Mapping[str, str], post: Post | None = None
) -> list[Delivery]:
    """POST ``payload()`` (built only when some webhook lists ``kind``) to each webhook listing ``kind``, with
    alerts.timeout, retries and backoff; one :class:`Delivery` per webhook, never raises for a failed one."""
    alerts = config.alerts
    hooks = [(i, w) for i, w in enumerate(alerts.webhooks) if kind in w.events]
    if not hooks:
        return []
    body = json.dumps(payload(), default=str).encode()
    timeout = parse_duration(alerts.timeout).total_seconds()
    backoff = parse_duration(alerts.backoff).total_seconds()
    out = []
    for i, hook in hooks:
        try:
            url = _resolve(hook.url, environ)
        except LookupError as err:
            out.append(Delivery(i, False, 0, None, f"alerts.webhooks.{i}.url: {err}"))
            continue
        delivered, attempts, status, error = _deliver(url, body, timeout, alerts.retries, backoff, post or _post)
        out.append(Delivery(i, delivered, attempts, status, error))
    return out


def record_undelivered(config: Config, event: Notification, failed: list[Delivery], storage: Storage) -> None:
    """A JSON record of the undelivered notification (what it said and why it did not arrive)."""
    model = event.model or config.training.model_name
    key = f"{monitoring_prefix(model)}/notifications/{event.at:%Y%m%dT%H%M%SZ}-{event.kind}-{secrets.token_hex(3)}.json"
    record = {
        "kind": event.kind,
        "summary": event.summary,
        "details": dict(event.details),
        "model": model,
        "at": event.at.isoformat(),
        "deliveries": [asdict(d) for d in failed],
    }
    try:
        storage.write_text(key, json.dumps(record, indent=2, default=str))
    except Exception:
        log.exception("could not record the undelivered notification %s", event.kind)


def drift_event(record: dict) -> Notification:
    """The notification of a drift check's verdict record (``kfloop.monitoring.monitor.run_check``)."""
    drift = record["drift"]
    drifted = [c for c in drift["columns"] if c["drifted"]]
    share = drift.get("share")
    details: dict[str, Any] = {
        "version": record["model_version"],
        "drifted share": f"{share:.3f} (drift at ≥ {drift.get('drift_share')})" if share is not None else "-",
        "window rows": record["window"]["rows"],
        "check": record["check_id"],
    }
    for c in sorted(drifted, key=lambda c: c["column"])[: _MAX_FIELDS - len(details)]:
        details[c["column"]] = f"{c['stattest']} {c['score']:.4g} (threshold {c['threshold']:.4g})"
    names = ", ".join(c["column"] for c in drifted) or "-"
    return Notification(
        "drift",
        f"{record['model']} {record['model_version']}: {len(drifted)} drifted column(s): {names}",
        details,
        model=record["model"],
    )


def freshness_event(config: Config, rows: list) -> Notification:
    """The notification of a freshness breach (``kfloop.feature_repo.status.ViewStatus`` rows; the stale ones
    are named)."""
    stale = [r for r in rows if r.stale]

    def lag(r) -> str:
        return "never materialized" if r.lag_seconds is None else f"lag {r.lag_seconds:.0f}s"

    details = {r.view: f"{lag(r)}, SLA {r.sla_seconds:.0f}s" for r in stale[:_MAX_FIELDS]}
    names = ", ".join(r.view for r in stale)
    return Notification(
        "freshness_breach",
        f"{len(stale)} feature view(s) breach features.freshness_sla ({config.features.freshness_sla}): {names}",
        details,
        model=config.training.model_name,
    )
