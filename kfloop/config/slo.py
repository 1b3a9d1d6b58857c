"""The ``slo`` section: the loop's service level objectives and their window.

Four objectives, each a share of good events over ``slo.window`` that must reach ``objective``; ``1 - objective``
is the error budget. ``kfloop slo status`` measures them (from the workspace's records or from Prometheus) and
``kfloop alerts rules`` derives the burn-rate alerts from them, so each target and threshold lives here once:

- ``feature_freshness``: minutes in which a view's online features are fresh, the threshold being
  ``features.freshness_sla`` (the SLA the materialization schedule and the staleness alert keep too);
- ``pipeline_success``: ``kfloop run`` runs that end without an error;
- ``serving_availability``: inference requests not failed by the server;
- ``serving_latency``: inference requests answered within ``threshold_seconds`` (a bucket boundary of the
  ``kfloop_request_seconds`` histogram, so Prometheus counts it exactly rather than interpolating).
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration

#: The upper bounds of serving's request-time histogram (``kfloop_request_seconds``, kfloop.serving.metrics):
#: a latency threshold must be one of them, since Prometheus only knows the count of requests at or below a bound.
SERVING_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: The burn-rate policy of the SRE workbook (ch. 5, "multiwindow, multi-burn-rate alerts"): (long window, short
#: window, share of the whole window's error budget spent in the long window, severity). Over a 30-day window
#: these are the classic 14.4x over 1h/5m (page) and 6x over 6h/30m (ticket); the factor scales with the window.
BURN_RATE_POLICY = (("1h", "5m", 0.02, "page"), ("6h", "30m", 0.05, "ticket"))

MIN_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=90)


def burn_factor(window: str, long: str, budget_share: float) -> float:
    """How many times faster than even the error budget burns when ``budget_share`` of it goes in ``long``."""
    return budget_share * parse_duration(window) / parse_duration(long)


class Objective(Section):
    """One objective: the share of good events over the window that must be reached."""

    objective: float = Field(
        gt=0, lt=1, description="Target share of good events over `slo.window` (0.995: an error budget of 0.5 %)."
    )


class LatencyObjective(Objective):
    """The latency objective: the share of requests answered within ``threshold_seconds``."""

    threshold_seconds: float = Field(
        0.5,
        gt=0,
        description="A request within this many seconds (server side) is good. One of the bucket bounds of the "
        "`kfloop_request_seconds` histogram: " + ", ".join(f"{b:g}" for b in SERVING_LATENCY_BUCKETS) + ".",
    )

    @field_validator("threshold_seconds")
    @classmethod
    def _bucket_bound(cls, value: float) -> float:
        if value not in SERVING_LATENCY_BUCKETS:
            raise ValueError(
                f"{value:g} is not a bucket bound of the kfloop_request_seconds histogram (Prometheus could only "
                f"interpolate it); use one of {', '.join(f'{b:g}' for b in SERVING_LATENCY_BUCKETS)}"
            )
        return value


class SloConfig(Section):
    """Service level objectives over a rolling window: `kfloop slo status` reports each one's indicator and the
    error budget left; `kfloop alerts rules` pages when a budget burns fast (the SRE workbook's multiwindow
    burn rates: 2 % of the window's budget in 1h and 5m pages, 5 % in 6h and 30m opens a ticket)."""

    window: str = Field(
        "30d",
        description="The rolling window every objective is measured over (7d to 90d). On Prometheus the "
        "indicators need that much retention (Prometheus keeps 15d by default).",
    )
    prometheus_url: str | None = Field(
        None,
        description="The Prometheus that scrapes kfloop (its HTTP API's base URL, e.g. "
        "`http://prometheus-operated.monitoring:9090`): `kfloop slo status` reads the indicators there, as on a "
        "cluster. null: from the workspace's own records (pipeline runs, freshness samples, request samples).",
    )
    feature_freshness: Objective = Field(
        Objective(objective=0.99),
        description="Minutes in which each online feature view is fresh: no older than `features.freshness_sla` "
        "(the age of its newest online event at the minute's end), or written that minute with a p99 lag within "
        "it. Summed over views; a view's minutes count from its first recorded write.",
    )
    pipeline_success: Objective = Field(
        Objective(objective=0.995),
        description="Training pipeline runs (`kfloop run`, also a local retrain) that end without an error. A "
        "candidate the promotion gate refuses is a success (the gate did its job); a run stopped by the data "
        "contract gate or any crash is a failure.",
    )
    serving_availability: Objective = Field(
        Objective(objective=0.995),
        description="Inference requests not failed by the server: REST 5xx and gRPC INTERNAL, UNAVAILABLE, "
        "UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED are bad; a client's mistake (4xx, INVALID_ARGUMENT, NOT_FOUND) "
        "does not count against it.",
    )
    serving_latency: LatencyObjective = Field(
        LatencyObjective(objective=0.99),
        description="Inference requests answered within `threshold_seconds` (server side, every status): "
        "objective 0.99 with 0.5 s is 'p99 at most 0.5 s'.",
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        span = parse_duration(value)
        if not MIN_WINDOW <= span <= MAX_WINDOW:
            raise ValueError(
                f"{value!r}: give a window of 7d to 90d (the burn-rate alerts spend a share of it per hour; a "
                "shorter window makes them fire below the budget's own rate)"
            )
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(
                f"{value!r}: give the HTTP API's base URL, e.g. http://prometheus-operated.monitoring:9090"
            )
        return value

    @model_validator(mode="after")
    def _alertable(self) -> SloConfig:
        """The fastest burn rate must stay below an error ratio of 100 %, or its page could never fire."""
        long, _, share, _ = BURN_RATE_POLICY[0]
        factor = burn_factor(self.window, long, share)
        for name in ("feature_freshness", "serving_availability", "serving_latency"):
            objective = getattr(self, name).objective
            if factor * (1 - objective) >= 1:
                floor = 1 - 1 / factor
                raise ValueError(
                    f"{name}.objective {objective:g}: burning its budget {factor:.3g}x too fast would need more "
                    f"than 100 % bad events, so the page alert could never fire; set it above {floor:.4f} (or a "
                    "shorter slo.window)"
                )
        return self

    def objectives(self) -> dict[str, Objective]:
        """Every objective by its name (the order ``kfloop slo status`` reports them in)."""
        return {
            "feature_freshness": self.feature_freshness,
            "pipeline_success": self.pipeline_success,
            "serving_availability": self.serving_availability,
            "serving_latency": self.serving_latency,
        }
