"""The Alertmanager entry point of retraining: a webhook receiver (payload version 4) that runs the same
decision as ``kfloop monitor check --retrain``.

Alertmanager re-delivers a notification on every ``repeat_interval`` and after a failed send, so each firing
alert is handled once: its digest (``groupKey``, ``fingerprint``, ``startsAt``) is created exclusively in the
workspace before deciding, which survives a restart and decides a race between two receivers. A re-delivered
alert is audited as "no" and starts nothing; an alert that fires again later (new ``startsAt``) is decided
anew, and the episode guard still stops a second run for the same episode. The decision is on the check the
alert names (label or annotation ``check_id``), else the newest check.

The receiver answers 200 with the decisions, 4xx naming what is wrong with a request, and 503 (with the
digest withdrawn, so Alertmanager's retry is decided again) when starting the run failed: never a bare 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kfloop import layout
from kfloop.config import Config
from kfloop.errors import AlertPayloadError
from kfloop.monitoring.launch import Launcher
from kfloop.monitoring.monitor import read_check
from kfloop.monitoring.retrain import NO, append_audit, decide
from kfloop.storage import Storage

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # Alertmanager truncates to max_alerts; a megabyte is far beyond any real payload
PATHS = ("/", "/alerts", "/api/v1/alerts")
_CHECK_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def parse_payload(body: bytes) -> dict:
    """The payload, checked for what the receiver reads: ``version`` "4", a ``groupKey`` and ``alerts`` each
    with a ``status`` and a ``fingerprint``."""
    try:
        payload = json.loads(body)
    except ValueError as err:
        raise AlertPayloadError(f"body is not JSON: {err}") from err
    if not isinstance(payload, dict):
        raise AlertPayloadError("body is not a JSON object")
    if payload.get("version") != "4":
        raise AlertPayloadError(f"version {payload.get('version')!r}: only Alertmanager webhook payload version 4")
    if not isinstance(payload.get("groupKey"), str) or not payload["groupKey"]:
        raise AlertPayloadError("groupKey: missing or not a string")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise AlertPayloadError("alerts: missing or not a list")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise AlertPayloadError(f"alerts[{i}]: not an object")
        if alert.get("status") not in ("firing", "resolved"):
            raise AlertPayloadError(f"alerts[{i}].status: {alert.get('status')!r}, expected firing or resolved")
        if not isinstance(alert.get("fingerprint"), str) or not alert["fingerprint"]:
            raise AlertPayloadError(f"alerts[{i}].fingerprint: missing or not a string")
        for field in ("labels", "annotations"):
            if not isinstance(alert.get(field, {}), dict):
                raise AlertPayloadError(f"alerts[{i}].{field}: not an object")
    return payload


def _digest(group_key: str, alert: dict) -> str:
    text = "\0".join((group_key, alert["fingerprint"], str(alert.get("startsAt", ""))))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def handle(
    config: Config, storage: Storage, payload: dict, launcher: Launcher, now: datetime | None = None
) -> list[dict]:
    """Decide on every alert of a parsed payload; returns the audit records, one per alert."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    model = config.training.model_name
    out = []
    for alert in payload["alerts"]:
        labels, notes = alert.get("labels") or {}, alert.get("annotations") or {}
        context = {
            "group_key": payload["groupKey"],
            "fingerprint": alert["fingerprint"],
            "alertname": labels.get("alertname"),
            "starts_at": alert.get("startsAt"),
            "status": alert["status"],
        }
        check_id = labels.get("check_id") or notes.get("check_id")
        try:
            if check_id is not None and not _CHECK_ID.fullmatch(str(check_id)):
                raise FileNotFoundError(check_id)  # not a check id: never a storage key
            record = read_check(storage, model, check_id)
        except FileNotFoundError:
            record = {"model": model, "model_version": None, "check_id": check_id, "verdict": None}
        if alert["status"] != "firing":
            out.append(_no(storage, record, context, "resolved alert: nothing to start", now))
            continue
        if labels.get("model") not in (None, model):
            out.append(_no(storage, record, context, f"alert is about model {labels['model']!r}, not {model!r}", now))
            continue
        key = layout.alert_delivery_key(model, _digest(payload["groupKey"], alert))
        if not storage.create_exclusive(key, json.dumps({**context, "received": now.isoformat()}).encode()):
            out.append(_no(storage, record, context, "re-delivered alert (groupKey and fingerprint handled)", now))
            continue
        if record["verdict"] is None:
            out.append(_no(storage, record, context, f"no drift check {check_id or '(latest)'} to decide on", now))
            continue
        try:
            out.append(decide(config, storage, record, launcher, now=now, source="webhook", context=context))
        except Exception:
            storage.delete(key)  # not handled: Alertmanager's retry is decided again
            raise
    return out


def _no(storage: Storage, record: dict, context: dict, reason: str, now: datetime) -> dict:
    audit = {
        "source": "webhook",
        "context": context,
        "model": record["model"],
        "model_version": record.get("model_version"),
        "check_id": record.get("check_id"),
        "verdict": record.get("verdict"),
        "drifted": [],
        "episode": None,
        "run_id": None,
        "run": None,
        "decision": NO,
        "reason": reason,
    }
    return append_audit(storage, audit, now)


def make_server(config: Config, storage: Storage, launcher: Launcher, host: str, port: int) -> ThreadingHTTPServer:
    """The receiver, bound and ready (``serve_forever`` to run it; port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(HTTPStatus.OK, {"status": "ok"})
            else:
                self._answer(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: POST alerts to one of {', '.join(PATHS)}"})

        def do_POST(self) -> None:
            if self.path not in PATHS:
                self._answer(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: POST alerts to one of {', '.join(PATHS)}"})
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = -1
            if size < 0 or size > MAX_BODY:
                self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body must be 0..{MAX_BODY} bytes"})
                return
            try:
                payload = parse_payload(self.rfile.read(size))
                decisions = handle(config, storage, payload, launcher)
            except AlertPayloadError as err:
                self._answer(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except Exception as err:  # the decision or the run failed: audited; let Alertmanager retry
                log.exception("retrain webhook: deciding failed")
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"deciding failed: {err}"})
            else:
                self._answer(HTTPStatus.OK, {"decisions": decisions})

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer, poll_s: float = 0.05) -> threading.Thread:
    """Run ``server`` on a daemon thread (tests, or embedding); ``server.shutdown()`` stops it within ``poll_s``."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_s,), name="retrain-webhook", daemon=True)
    thread.start()
    return thread
