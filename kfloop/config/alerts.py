"""The ``alerts`` section: webhook notifications of the loop's events (Slack-compatible JSON) and the
Prometheus alert rules ``kfloop alerts rules`` renders (drift, retraining, gates, pipeline runs, feature
freshness, serving latency and the availability SLO's multiwindow burn rates)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration
from kfloop.config.storage import SecretRef

#: The events a webhook can be told about (kfloop.monitoring.notify.Notification.kind).
EventKind = Literal["drift", "retrain_started", "retrain_refused", "gate_failed", "pipeline_failed", "freshness_breach"]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__

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
        "pipeline_failed, freshness_breach (default: all).",
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
    """Thresholds of the Prometheus alert rules (``kfloop alerts rules``)."""

    availability_slo: float = Field(
        0.995,
        gt=0,
        lt=1,
        description="Share of inference requests that must not fail with a server error (5xx, or gRPC INTERNAL, "
        "UNAVAILABLE, UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED) over 30 days; the burn-rate alerts fire when the error "
        "budget (1 - slo) burns 14.4x too fast over 1h and 5m (page) or 6x over 6h and 30m (ticket).",
    )
    latency_p99_seconds: float = Field(
        0.5, gt=0, description="Serving latency alert: the p99 server-side request time above this, for `latency_for`."
    )
    latency_for: str = Field("10m", description="How long the p99 must stay above the limit before it fires.")
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
