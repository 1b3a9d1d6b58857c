"""The indicators from Prometheus (a cluster): one instant query per count over ``slo.window``, built from the
metric names of :mod:`kfloop.monitoring.metric_names` and the selectors the alert rules use.

- ``serving_availability``: ``increase(kfloop_requests_total[window])`` of the model, bad those whose status
  matches :data:`~kfloop.monitoring.alert_rules.ERROR_STATUS`;
- ``serving_latency``: ``increase(kfloop_request_seconds_count[window])``, good the increase of the bucket whose
  ``le`` is ``slo.serving_latency.threshold_seconds`` (exact: the threshold is a bucket bound);
- ``pipeline_success``: ``increase(kfloop_pipeline_runs_total[window])`` (the run records' counter, through a
  textfile collector), bad ``outcome="failed"``;
- ``feature_freshness``: the minutes of ``[window:1m]`` in which each view's ``kfloop_feature_online_age_seconds``
  (the worst replica's) was at most ``features.freshness_sla``; a minute without the gauge (the writer down, no
  scrape) is not counted.

``increase`` extrapolates to the window's edges, so counts need not be whole numbers.
"""

from __future__ import annotations

from datetime import datetime

import httpx
from prometheus_client.utils import floatToGoString

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.errors import PrometheusError
from kfloop.slo.status import Count

__all__ = ["PrometheusClient", "PrometheusError", "prometheus_counts", "queries"]


class PrometheusClient:
    """Instant queries against Prometheus' HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str, at: datetime) -> float | None:
        """The sum of an instant vector's values at ``at`` (None: the vector is empty, no series matched)."""
        endpoint = f"{self.url}/api/v1/query"
        try:
            reply = httpx.post(endpoint, data={"query": promql, "time": f"{at.timestamp():.3f}"}, timeout=self.timeout)
        except httpx.HTTPError as err:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {err}") from err
        try:
            body = reply.json()
        except ValueError:
            raise PrometheusError(f"{endpoint}: HTTP {reply.status_code}, not Prometheus' JSON answer") from None
        if reply.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{endpoint} refused {promql!r}: {body.get('error') or reply.status_code}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        if data["resultType"] != "vector":
            raise PrometheusError(f"{endpoint}: {promql!r} gave a {data['resultType']}, not an instant vector")
        if not data["result"]:
            return None
        return sum(float(series["value"][1]) for series in data["result"])


def queries(config: Config) -> dict[str, tuple[str, str]]:
    """Per indicator, the PromQL of its (total, bad-or-good) counts: ``good`` for latency and freshness, ``bad``
    for the others (see :func:`prometheus_counts`)."""
    from kfloop.monitoring import metric_names as names
    from kfloop.monitoring.alert_rules import ERROR_STATUS, fresh_age_expr

    w = config.slo.window
    sel = f'model="{config.training.model_name}"'
    le = floatToGoString(config.slo.serving_latency.threshold_seconds)
    age = fresh_age_expr(config)
    sla = _number(parse_duration(config.features.freshness_sla).total_seconds())
    return {
        "serving_availability": (
            f"sum(increase({names.REQUESTS_TOTAL}{{{sel}}}[{w}]))",
            f'sum(increase({names.REQUESTS_TOTAL}{{{sel},status=~"{ERROR_STATUS}"}}[{w}]))',
        ),
        "serving_latency": (
            f"sum(increase({names.REQUEST_SECONDS}_count{{{sel}}}[{w}]))",
            f'sum(increase({names.REQUEST_SECONDS}_bucket{{{sel},le="{le}"}}[{w}]))',
        ),
        "pipeline_success": (
            f"sum(increase({names.PIPELINE_RUNS_TOTAL}{{{sel}}}[{w}]))",
            f'sum(increase({names.PIPELINE_RUNS_TOTAL}{{{sel},outcome="failed"}}[{w}]))',
        ),
        "feature_freshness": (
            f"sum(count_over_time(({age})[{w}:1m]))",
            f"sum(sum_over_time(({age} <= bool {sla})[{w}:1m]))",
        ),
    }


def _number(value: float) -> str:
    return f"{value:.6g}"


def prometheus_counts(config: Config, client: PrometheusClient, at: datetime) -> dict[str, Count]:
    """Every indicator's counts over the window ending ``at``; total 0 (and a detail saying so) when Prometheus
    has no series of it."""
    from kfloop.monitoring import metric_names as names

    w, model, project = config.slo.window, config.training.model_name, config.project
    threshold = config.slo.serving_latency.threshold_seconds
    q = queries(config)
    out: dict[str, Count] = {}

    def counted(name: str, what: str, metric: str, good_query: bool) -> tuple[float, float] | None:
        total_q, part_q = q[name]
        total = client.query(total_q, at)
        if total is None:
            out[name] = Count(0, 0, f"no {metric} series of {what} in Prometheus over {w}")
            return None
        part = client.query(part_q, at)
        if part is None and good_query and total > 0:
            raise PrometheusError(
                f"{client.url}: {metric} has no series for {what} matching {part_q!r}; is the exporter's "
                f"histogram missing the bucket {threshold:g}?"
            )
        part = part or 0.0
        return (part, total) if good_query else (total - part, total)

    found = counted("serving_availability", f'model="{model}"', names.REQUESTS_TOTAL, good_query=False)
    if found:
        good, total = found
        out["serving_availability"] = Count(
            good, total, f"{total:,.0f} requests, {total - good:,.0f} server errors ({names.REQUESTS_TOTAL})"
        )
    found = counted("serving_latency", f'model="{model}"', f"{names.REQUEST_SECONDS}_bucket", good_query=True)
    if found:
        good, total = found
        out["serving_latency"] = Count(
            good,
            total,
            f"{total:,.0f} requests, {total - good:,.0f} slower than {threshold:g}s ({names.REQUEST_SECONDS})",
        )
    found = counted("pipeline_success", f'model="{model}"', names.PIPELINE_RUNS_TOTAL, good_query=False)
    if found:
        good, total = found
        out["pipeline_success"] = Count(
            good, total, f"{total:,.0f} runs, {total - good:,.0f} failed ({names.PIPELINE_RUNS_TOTAL})"
        )
    found = counted("feature_freshness", f'project="{project}"', names.FEATURE_ONLINE_AGE, good_query=True)
    if found:
        good, total = found
        out["feature_freshness"] = Count(
            good,
            total,
            f"{total - good:,.0f} of {total:,.0f} view-minutes older than features.freshness_sla "
            f"({config.features.freshness_sla}) ({names.FEATURE_ONLINE_AGE})",
        )
    return out
