"""The loop's events as Prometheus metrics (text exposition format, for a textfile collector or a scrape of the
workspace file), the inputs of the alert rules in :mod:`kfloop.monitoring.alert_rules` besides serving's and
the drift check's own metrics.

- Pipeline runs (``kfloop run`` writes them to ``monitoring/<model>/pipeline.prom``):
  ``kfloop_pipeline_run_failed{model}`` 1 when the newest run failed, ``kfloop_gate_failed{model,gate}`` 1 when
  its ``contract`` gate stopped it or its ``promotion`` gate rejected the candidate, and
  ``kfloop_pipeline_run_timestamp_seconds{model}``.
- Retraining decisions (the retraining trigger exports them: :func:`retrain_metrics_from_audit` to
  :func:`retrain_metrics_key`):
  ``kfloop_retrain_decision_timestamp_seconds{model,decision}`` the time of the newest ``started`` and
  ``refused`` decision.
- Feature freshness (``kfloop features status --metrics FILE``): ``kfloop_feature_freshness_lag_seconds``,
  ``kfloop_feature_freshness_sla_seconds``, ``kfloop_feature_stale`` by ``project`` and ``view``, and
  ``kfloop_feature_status_timestamp_seconds{project}``.

Each render uses a registry of its own, so it holds exactly its values and nothing a server process exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kfloop.layout import monitoring_prefix

PIPELINE_FAILED = "kfloop_pipeline_run_failed"
PIPELINE_TIMESTAMP = "kfloop_pipeline_run_timestamp_seconds"
#: Every recorded pipeline run by outcome (a counter: exported as ``_total``; kfloop.slo.runs writes it).
PIPELINE_RUNS = "kfloop_pipeline_runs"
GATE_FAILED = "kfloop_gate_failed"
RETRAIN_DECISION = "kfloop_retrain_decision_timestamp_seconds"
FRESHNESS_LAG = "kfloop_feature_freshness_lag_seconds"
FRESHNESS_SLA = "kfloop_feature_freshness_sla_seconds"
FEATURE_STALE = "kfloop_feature_stale"
FEATURE_STATUS_TIMESTAMP = "kfloop_feature_status_timestamp_seconds"
#: The stream worker's own metrics (its /metrics): event timestamp → online write lag (a histogram) and the age of
#: the newest value online (a gauge), by project and view; records read, by outcome.
FEATURE_PUSH_LAG = "kfloop_feature_push_lag_seconds"
FEATURE_ONLINE_AGE = "kfloop_feature_online_age_seconds"
STREAM_RECORDS = "kfloop_stream_records"

GATES = ("contract", "promotion")
RETRAIN_DECISIONS = ("started", "refused")


def pipeline_metrics_key(model: str) -> str:
    """The newest ``kfloop run``'s metrics in the workspace (beside the drift check's ``latest.prom``)."""
    return f"{monitoring_prefix(model)}/pipeline.prom"


def retrain_metrics_key(model: str) -> str:
    """Where the retraining trigger keeps its decision metrics in the workspace."""
    return f"{monitoring_prefix(model)}/retrain.prom"


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


def _render(families: list[GaugeMetricFamily]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def pipeline_run_metrics(model: str, at: datetime, *, failed: bool, gates_failed: Iterable[str] = ()) -> bytes:
    """The newest pipeline run: failed or not, and which gates (``contract``, ``promotion``) failed."""
    gates_failed = set(gates_failed)
    unknown = gates_failed - set(GATES)
    if unknown:
        raise ValueError(f"unknown gate {sorted(unknown)}: one of {', '.join(GATES)}")
    run = GaugeMetricFamily(PIPELINE_FAILED, "1 when the newest pipeline run failed, else 0.", labels=["model"])
    run.add_metric([model], 1.0 if failed else 0.0)
    when = GaugeMetricFamily(PIPELINE_TIMESTAMP, "When the newest pipeline run ended (Unix time).", labels=["model"])
    when.add_metric([model], at.timestamp())
    gate = GaugeMetricFamily(
        GATE_FAILED,
        "1 when a gate of the newest pipeline run failed: contract (the data stopped the run) or promotion (the "
        "candidate was not promoted).",
        labels=["model", "gate"],
    )
    for name in GATES:
        gate.add_metric([model, name], 1.0 if name in gates_failed else 0.0)
    return _render([run, when, gate])


def retrain_decision_metrics(model: str, newest: Mapping[str, datetime]) -> bytes:
    """The retraining trigger's decisions: ``newest`` maps ``started`` / ``refused`` to the time of the newest
    decision of that kind (a kind never decided is left out). The trigger keeps this file current (e.g. under
    :func:`retrain_metrics_key`); RetrainStarted and RetrainRefused fire for ``alerts.rules.event_window`` after
    a decision."""
    unknown = set(newest) - set(RETRAIN_DECISIONS)
    if unknown:
        raise ValueError(f"unknown retrain decision {sorted(unknown)}: one of {', '.join(RETRAIN_DECISIONS)}")
    fam = GaugeMetricFamily(
        RETRAIN_DECISION,
        "When the newest retraining decision of each kind was taken (Unix time).",
        labels=["model", "decision"],
    )
    for decision in RETRAIN_DECISIONS:
        if decision in newest:
            fam.add_metric([model, decision], newest[decision].timestamp())
    return _render([fam])


def retrain_metrics_from_audit(model: str, records: Iterable[Mapping]) -> bytes:
    """:func:`retrain_decision_metrics` from the retraining trigger's audit records (``at``, ``decision``,
    ``verdict``, ``model``): a ``retrain`` decision is ``started``; any other decision on a drift verdict is
    ``refused`` (the "no"s on other verdicts are routine, as the trigger's notifications treat them)."""
    newest: dict[str, datetime] = {}
    for r in records:
        if r.get("model", model) != model or not r.get("at"):
            continue
        if r.get("decision") == "retrain":
            kind = "started"
        elif r.get("verdict") == "drift":
            kind = "refused"
        else:
            continue
        at = datetime.fromisoformat(r["at"])
        if kind not in newest or at > newest[kind]:
            newest[kind] = at
    return retrain_decision_metrics(model, newest)


def freshness_metrics(project: str, rows: Iterable, at: datetime) -> bytes:
    """Feature freshness of every view (``kfloop.feature_repo.status.ViewStatus`` rows); a view never
    materialized has no lag sample, and is stale."""
    lag = GaugeMetricFamily(
        FRESHNESS_LAG,
        "Materialization lag of a view: newest computed minus newest online event.",
        labels=["project", "view"],
    )
    sla = GaugeMetricFamily(FRESHNESS_SLA, "features.freshness_sla in seconds.", labels=["project", "view"])
    stale = GaugeMetricFamily(
        FEATURE_STALE,
        "1 when a view breaches features.freshness_sla (or was never materialized).",
        labels=["project", "view"],
    )
    for r in rows:
        if r.lag_seconds is not None:
            lag.add_metric([project, r.view], float(r.lag_seconds))
        sla.add_metric([project, r.view], float(r.sla_seconds))
        stale.add_metric([project, r.view], 1.0 if r.stale else 0.0)
    when = GaugeMetricFamily(
        FEATURE_STATUS_TIMESTAMP, "When the feature status was taken (Unix time).", labels=["project"]
    )
    when.add_metric([project], at.timestamp())
    return _render([lag, sla, stale, when])


# --- periodic reports (kfloop.report.deliver writes them to report_metrics_key) ---------------------------------
#: ``kfloop_report_delivery_total{model,outcome}`` (a counter: each webhook delivery of a periodic report, outcome
#: ``delivered`` or ``failed``), the time of the newest delivery of each outcome, and when the newest report was made.
REPORT_DELIVERY = "kfloop_report_delivery"
REPORT_DELIVERY_TIMESTAMP = "kfloop_report_delivery_timestamp_seconds"
REPORT_TIMESTAMP = "kfloop_report_timestamp_seconds"
REPORT_OUTCOMES = ("delivered", "failed")


def report_metrics_key(model: str) -> str:
    """The periodic report's delivery metrics in the workspace (beside ``pipeline.prom`` and ``retrain.prom``)."""
    return f"{monitoring_prefix(model)}/report.prom"


def report_delivery_metrics(
    model: str, counts: Mapping[str, int], newest: Mapping[str, datetime], reported: datetime | None
) -> bytes:
    """Deliveries of ``model``'s periodic reports so far: ``counts`` and ``newest`` (time of the newest) by outcome
    (``delivered``, ``failed``; every outcome is exported, 0 when none), and when the newest report was made."""
    from prometheus_client.core import CounterMetricFamily

    unknown = (set(counts) | set(newest)) - set(REPORT_OUTCOMES)
    if unknown:
        raise ValueError(f"unknown report delivery outcome {sorted(unknown)}: one of {', '.join(REPORT_OUTCOMES)}")
    total = CounterMetricFamily(
        REPORT_DELIVERY, "Webhook deliveries of the model's periodic reports, by outcome.", labels=["model", "outcome"]
    )
    when = GaugeMetricFamily(
        REPORT_DELIVERY_TIMESTAMP,
        "When the newest webhook delivery of a periodic report of each outcome happened (Unix time).",
        labels=["model", "outcome"],
    )
    for outcome in REPORT_OUTCOMES:
        total.add_metric([model, outcome], float(counts.get(outcome, 0)))
        if outcome in newest:
            when.add_metric([model, outcome], newest[outcome].timestamp())
    made = GaugeMetricFamily(
        REPORT_TIMESTAMP, "When the newest periodic report was made (Unix time).", labels=["model"]
    )
    if reported is not None:
        made.add_metric([model], reported.timestamp())
    return _render([total, when, made])
