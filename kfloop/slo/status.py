"""Each service level indicator and the error budget it leaves over ``slo.window``.

An indicator is ``good / total`` events over the window; the error budget is the bad share the objective
allows, ``1 - objective``; ``budget_remaining`` is the part of it not yet spent: ``1 - bad / (total * (1 -
objective))`` (1.0 untouched, 0 exactly at the objective, negative overspent). The arithmetic is exact (on
fractions of the numbers as they print), so a window exactly at its objective reads 0, not 1e-16.

Where the events come from: with a Prometheus URL (``--prometheus`` or ``slo.prometheus_url``, a cluster) each
indicator is a PromQL query (:mod:`kfloop.slo.prometheus`); an indicator Prometheus has no series of falls back
to the workspace's own records, and ``source`` says which one answered. Without one, the workspace answers:
pipeline runs from their run records (:mod:`kfloop.slo.runs`), freshness from the freshness samples
(:mod:`kfloop.slo.freshness`), serving availability and latency from the request samples each serving process
records from its own request metrics (:mod:`kfloop.slo.serving`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.storage import Storage

__all__ = ["SLO_NAMES", "Count", "SloStatus", "budget_remaining", "measured", "slo_status", "window_bounds"]

#: The objectives, in the order they are reported (the keys of ``config.slo.objectives()``).
SLO_NAMES = ("feature_freshness", "pipeline_success", "serving_availability", "serving_latency")
WORKSPACE, PROMETHEUS = "workspace", "prometheus"


@dataclass(frozen=True)
class SloStatus:
    """One objective's indicator over the window and its error budget left."""

    name: str  # "feature_freshness", "pipeline_success", "serving_availability", "serving_latency"
    objective: float  # target ratio, e.g. 0.995
    window: str  # e.g. "30d"
    sli: float | None  # good / total over the window; None when there is no data
    good: float
    total: float
    budget_remaining: float | None  # share of the error budget left: 1.0 untouched, 0 spent, negative overspent
    source: str  # "workspace" or "prometheus"
    detail: str  # one line a human reads (what was counted, from where)

    @property
    def exhausted(self) -> bool:
        """The budget is spent (at or below 0): the objective is met no more, or only just."""
        return self.budget_remaining is not None and self.budget_remaining <= 0


@dataclass(frozen=True)
class Count:
    """What one source counted for one indicator: good and total events, and how (one line)."""

    good: float
    total: float
    detail: str


def budget_remaining(objective: float, good: float, total: float) -> float | None:
    """The share of the error budget left after ``total - good`` bad events (None without events)."""
    if total <= 0:
        return None
    # Each number as the decimal it prints as: 0.995 is exactly 1/200, not the float's 0.00500000000000000444.
    objective_, good_, total_ = (Fraction(repr(float(x))) for x in (objective, good, total))
    return float(1 - (total_ - good_) / (total_ * (1 - objective_)))


def measured(name: str, objective: float, window: str, count: Count, source: str) -> SloStatus:
    """The status of one objective from what a source counted."""
    sli = count.good / count.total if count.total > 0 else None
    return SloStatus(
        name,
        objective,
        window,
        sli,
        count.good,
        count.total,
        budget_remaining(objective, count.good, count.total),
        source,
        count.detail,
    )


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the window ending ``now`` (UTC)."""
    end = now.astimezone(UTC)
    return end - parse_duration(window), end


def _workspace_counters(config: Config, storage: Storage) -> dict[str, Callable[[datetime, datetime], Count]]:
    from kfloop.slo.freshness import freshness_count
    from kfloop.slo.runs import pipeline_count
    from kfloop.slo.serving import serving_counts

    served: dict[tuple[datetime, datetime], dict[str, Count]] = {}  # both serving indicators from one read

    def serving(name: str) -> Callable[[datetime, datetime], Count]:
        def count(start: datetime, end: datetime) -> Count:
            if (start, end) not in served:
                served[start, end] = serving_counts(config, storage, start, end)
            return served[start, end][name]

        return count

    return {
        "feature_freshness": lambda start, end: freshness_count(config, storage, start, end),
        "pipeline_success": lambda start, end: pipeline_count(storage, config.training.model_name, start, end),
        "serving_availability": serving("serving_availability"),
        "serving_latency": serving("serving_latency"),
    }


def slo_status(
    config: Config, storage: Storage, *, now: datetime | None = None, prometheus_url: str | None = None
) -> list[SloStatus]:
    """Every objective of ``config.slo`` over the window ending now (``now``: the clock, for tests), in
    :data:`SLO_NAMES` order. ``prometheus_url`` (default ``config.slo.prometheus_url``) reads the indicators from
    Prometheus, falling back to the workspace for one it has no series of; without it the workspace answers."""
    slo = config.slo
    start, end = window_bounds(slo.window, now or datetime.now(UTC))
    objectives = slo.objectives()
    local = _workspace_counters(config, storage)
    url = prometheus_url or slo.prometheus_url
    remote: dict[str, Count | None] = {}
    if url:
        from kfloop.slo.prometheus import PrometheusClient, prometheus_counts

        remote = prometheus_counts(config, PrometheusClient(url), end)
    out = []
    for name in SLO_NAMES:
        objective = objectives[name].objective
        found = remote.get(name)
        if found is not None and found.total > 0:
            out.append(measured(name, objective, slo.window, found, PROMETHEUS))
            continue
        own = local[name](start, end)
        if found is not None and own.total <= 0:  # neither has events: say what Prometheus (asked first) saw
            own = Count(0, 0, f"{found.detail}; workspace: {own.detail}")
        out.append(measured(name, objective, slo.window, own, WORKSPACE if own.total > 0 or not url else PROMETHEUS))
    return out
