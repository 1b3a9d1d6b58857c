"""The ``alerts`` section: webhook notifications of the loop's events (Slack-compatible JSON) and the
Prometheus alert rules ``kfloop alerts rules`` renders (drift, retraining, gates, pipeline runs, feature
freshness, serving latency, and the burn rates of the ``slo`` section's objectives)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration
from kfloop.config.storage import SecretRef

#: The events a webhook can be told about (kfloop.monitoring.notify.Notification.kind).
EventKind = Literal[
    "drift", "retrain_started", "retrain_refused", "gate_failed", "pipeline_failed", "freshness_breach", "report"
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__

#: Former ``alerts.rules`` keys and where they live now.
MOVED_TO_SLO = {
    "availability_slo": "serving_availability.objective",
    "latency_p99_seconds": "serving_latency.threshold_seconds",
}

_PLACEHOLDER = re.compile(r"\$\{[A-Z_][A-Z0-9_]*\}")


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


class Webhook(Section):
    """One incoming-webhook endpoint (Slack, or anything that takes Slack's ``{"text", "blocks"}`` JSON). A
    webhook URL carries its own token, so it is a secret: the config names it as ``${VAR}`` only."""

    url: str = Field(
        "${KFLOOP_ALERT_WEBHOOK_URL}",
        description="The endpoint, as `${VAR}` placeholders resolved from the environment when an event is sent "
        "(e.g. `${SLACK_WEBHOOK_URL}`); a literal URL is refused (it would put the token in the file).",
    )
    secret: SecretRef | None = Field(
        SecretRef(env="KFLOOP_ALERT_WEBHOOK_URL", secret_name="kfloop-alerts", secret_key="webhook-url"),
        description="On a cluster, the Kubernetes Secret that provides the variable used in url.",
    )
    events: tuple[EventKind, ...] = Field(
        EVENT_KINDS,
        min_length=1,
        description="The events sent to this endpoint: drift, retrain_started, retrain_refused, gate_failed, "
        "pipeline_failed, freshness_breach, report (the periodic report; default: all).",
    )

    @field_validator("url")
    @classmethod
    def _secret_url(cls, value: str) -> str:
        if not _PLACEHOLDER.search(value):
            raise ValueError(
                "a webhook URL is a secret (it carries the token): give it as ${VAR} and set the variable, "
                "e.g. url: ${SLACK_WEBHOOK_URL}"
            )
        return value


class AlertRules(Section):
    """Thresholds of the Prometheus alert rules (``kfloop alerts rules``). The objectives the burn-rate alerts
    guard (availability, latency, freshness, pipeline runs) are the `slo` section's."""

    latency_for: str = Field(
        "10m",
        description="KfloopServingLatencyHigh: how long the requests slower than slo.serving_latency.threshold_seconds "
        "must stay above the objective's share (over 5m) before it fires.",
    )
    min_request_rate: float = Field(
        0.0,
        ge=0,
        description="Requests per second (5m rate) a model needs before its latency alert counts (0: any traffic).",
    )
    drift_for: str = Field(
        "0m", description="How long a drift verdict must stand before the drift alert fires (0m: at once)."
    )
    drift_check_stale_after: str = Field(
        "1h", description="A model whose newest drift check is older than this raises KfloopDriftCheckStale."
    )
    event_window: str = Field(
        "1h",
        description="Retrain started/refused alerts stay firing this long after the decision (their metrics are "
        "decision times).",
    )

    @field_validator("latency_for", "drift_for", "drift_check_stale_after", "event_window")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """The objectives moved to `slo` (one place for each target): name the new key, not just 'unknown'."""
        if isinstance(data, dict):
            moved = [f"{old} moved to slo.{new}" for old, new in MOVED_TO_SLO.items() if old in data]
            if moved:
                raise ValueError("; ".join(moved))
        return data


class AlertsConfig(Section):
    """Where the loop's events are sent and the thresholds of its Prometheus alerts. Notifications go to each
    webhook that lists the event, with a timeout and retries; a failed notification is logged and recorded
    under `monitoring/<model>/notifications/`, and never fails the command that raised it."""

    webhooks: tuple[Webhook, ...] = Field(
        (),
        description="Incoming webhooks (Slack-compatible JSON) told about the events each lists; none: no "
        "notifications.",
    )
    timeout: str = Field("5s", description="Time limit of one delivery attempt (connect + answer).")
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Further attempts after a failed delivery (a 5xx, a 429 or no answer; a 4xx is final).",
    )
    backoff: str = Field("1s", description="Wait before the first retry; each further retry waits twice as long.")
    rules: AlertRules = Field(AlertRules(), description="Thresholds of the Prometheus alert rules.")

    @field_validator("timeout", "backoff")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value)
