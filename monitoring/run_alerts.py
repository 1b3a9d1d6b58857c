"""What a finished ``kfloop run`` tells the alerting: its metrics (``monitoring/<model>/pipeline.prom``, see
:mod:`kfloop.monitoring.event_metrics`) and a notification when it failed or a gate failed. Never raises: the
run's own outcome is what the caller reports."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kfloop.config import Config
from kfloop.monitoring.event_metrics import pipeline_metrics_key, pipeline_run_metrics
from kfloop.monitoring.notify import Notification, notify
from kfloop.storage import Storage

log = logging.getLogger("kfloop.notify")

#: How pipelines/local.py's PipelineError message starts when a data contract gate stopped the run.
CONTRACT_GATE_PREFIX = "data contract gate"


def run_events(model: str, error: BaseException | None, decision: dict | None) -> tuple[set[str], list[Notification]]:
    """The failed gates and the notifications of one run: ``error`` the run's failure (None: it succeeded),
    ``decision`` the promotion gate's decision record of the version it trained (None: none was made)."""
    if error is not None:
        message = str(error)
        first = message.splitlines()[0] if message else type(error).__name__
        details = {"error": message[:1500]}
        if message.startswith(CONTRACT_GATE_PREFIX):
            return {"contract"}, [Notification("gate_failed", first, {"gate": "contract", **details}, model=model)]
        return set(), [Notification("pipeline_failed", first, details, model=model)]
    if decision and decision.get("promoted") is False and not decision.get("reused"):
        reasons = "; ".join(decision.get("reasons") or []) or "-"
        champion = decision.get("champion_before") or "-"
        summary = f"{decision.get('version')} was not promoted (champion stays {champion}): {reasons}"
        details = {"gate": "promotion", "version": decision.get("version"), "champion": champion, "reasons": reasons}
        return {"promotion"}, [Notification("gate_failed", summary[:500], details, model=model)]
    return set(), []


def report_pipeline_run(
    config: Config,
    storage: Storage | None,
    *,
    error: BaseException | None = None,
    decision: dict | None = None,
    now: datetime | None = None,
) -> list[Notification]:
    """Write the run's metrics to the workspace and send its notifications; returns the notifications."""
    model = config.training.model_name
    gates, events = run_events(model, error, decision)
    if storage is not None:
        try:
            body = pipeline_run_metrics(model, now or datetime.now(UTC), failed=error is not None, gates_failed=gates)
            storage.write_bytes(pipeline_metrics_key(model), body)
        except Exception:
            log.exception("could not write the pipeline run's metrics")
    for event in events:
        notify(config, event, storage=storage)
    return events
