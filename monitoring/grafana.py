"""The Grafana dashboard of one project's serving and pipeline metrics, built with grafana-foundation-sdk
(Grafana's maintained dashboards-as-code library) and rendered as JSON (``kfloop grafana``).

Rows: serving (traffic, errors against the availability SLO, latency, feature lookups, the served version,
refusals and contract violations), drift (share, verdict, drifted columns, window quality) and the loop (pipeline
runs and gates, retraining decisions, feature freshness against its SLA) and, when the config has a ``stream``
section, the stream worker (push lag p50/p99 and the age of the newest online value per feature view, records by
outcome). Queries are scoped to the project's
model (``training.model_name``) like its alert rules, and read the Prometheus data source chosen in the
dashboard's ``datasource`` variable. The rendered file lives in ``helm/kfloop/dashboards/``, for the Helm
chart to load (its ConfigMap for Grafana's dashboard sidecar comes with the chart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.files import atomic_write
from kfloop.monitoring import metric_names as names
from kfloop.monitoring.alert_rules import ERROR_STATUS

HEADER_KEY = "__generated"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One panel: a time series, or a stat (the newest value, coloured by ``thresholds``: value → colour)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)


def _panels(config: Config) -> dict[str, list[PanelSpec]]:
    """The rows and their panels, for ``config``'s model and project."""
    sel = f'model="{config.training.model_name}"'
    slo = config.slo.serving_availability.objective
    rate = "[$__rate_interval]"
    q = Query
    serving = [
        PanelSpec(
            "Requests by protocol and status",
            "Inference requests per second (REST and gRPC), by protocol and status.",
            (q(f"sum by (protocol, status) (rate({names.REQUESTS_TOTAL}{{{sel}}}{rate}))", "{{protocol}} {{status}}"),),
            unit="reqps",
        ),
        PanelSpec(
            "Server error ratio",
            f"Share of requests the server failed (REST 5xx, gRPC server codes); the availability SLO allows "
            f"{(1 - slo) * 100:g} %. Client mistakes (4xx, INVALID_ARGUMENT, NOT_FOUND) do not count.",
            (
                q(  # `or vector(0)`: no failed request yet is a ratio of 0, not an empty panel
                    f'(sum(rate({names.REQUESTS_TOTAL}{{{sel},status=~"{ERROR_STATUS}"}}{rate})) or vector(0))'
                    f" / sum(rate({names.REQUESTS_TOTAL}{{{sel}}}{rate}))",
                    "errors",
                ),
            ),
            unit="percentunit",
            thresholds=((None, "green"), (round(1 - slo, 12), "red")),
        ),
        PanelSpec(
            "Request latency p50 / p99",
            "Server-side latency by protocol, from the kfloop_request_seconds histogram.",
            tuple(
                q(
                    f"histogram_quantile({p}, sum by (protocol, le) "
                    f"(rate({names.REQUEST_SECONDS}_bucket{{{sel}}}{rate})))",
                    f"p{int(p * 100)} {{{{protocol}}}}",
                )
                for p in (0.5, 0.99)
            ),
            unit="s",
        ),
        PanelSpec(
            "Feature lookup p99",
            "Feast online lookup time per request.",
            (q(f"histogram_quantile(0.99, sum by (le) (rate({names.LOOKUP_SECONDS}_bucket{{{sel}}}{rate})))", "p99"),),
            unit="s",
        ),
        PanelSpec(
            "Served version",
            "The model version each server pod serves (1 = serving).",
            (q(f"max by (version) ({names.MODEL_VERSION_INFO}{{{sel}}} == 1)", "{{version}}"),),
            kind="stat",
            width=4,
        ),
        PanelSpec(
            "Online store up",
            "1 when the online store answered the servers' last readiness probe (the lowest pod shown).",
            (q(f"min({names.STORE_UP}{{{sel}}})", "up"),),
            kind="stat",
            width=4,
            thresholds=((None, "red"), (1, "green")),
        ),
        PanelSpec(
            "Refused versions and reload errors",
            "Champion versions refused (corrupt, unloadable, inputs not the config's) and transient reload errors.",
            (
                q(f"sum by (reason) (increase({names.MODEL_REFUSED}_total{{{sel}}}[1h]))", "refused {{reason}}"),
                q(f"sum(increase({names.RELOAD_ERRORS}_total{{{sel}}}[1h]))", "reload errors"),
            ),
        ),
        PanelSpec(
            "Contract violations in requests",
            "Request rows with values outside the data contract, by check (flagged or rejected).",
            (q(f"sum by (check) (rate({names.CONTRACT_VIOLATIONS}_total{{{sel}}}{rate}))", "{{check}}"),),
            unit="ops",
        ),
    ]
    drift = [
        PanelSpec(
            "Drift share",
            f"Share of tested columns that drifted in each check; drift at {config.monitoring.drift_share}.",
            (q(f"max by (version) ({names.DRIFT_SHARE}{{{sel}}})", "{{version}}"),),
            unit="percentunit",
            thresholds=((None, "green"), (config.monitoring.drift_share, "red")),
        ),
        PanelSpec(
            "Verdict",
            "The newest check's verdict: 1 drift, 0 no drift.",
            (q(f'max({names.DRIFT_VERDICT}{{{sel},verdict="drift"}})', "drift"),),
            kind="stat",
            width=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        PanelSpec(
            "Drifted columns",
            "Columns that drifted in each check (1 while drifted).",
            (q(f"max by (column) ({names.DRIFT_DETECTED}{{{sel}}} == 1)", "{{column}}"),),
            width=12,
        ),
        PanelSpec(
            "Window quality and rows",
            "The checked window's data-quality score under the contract (0 to 100) and its rows.",
            (
                q(f"max({names.WINDOW_QUALITY}{{{sel}}})", "quality score"),
                q(f"max({names.DRIFT_WINDOW_ROWS}{{{sel}}})", "rows"),
            ),
        ),
        PanelSpec(
            "Since the last drift check",
            "Seconds since the newest drift check ran (a silent check alerts).",
            (q(f"time() - max({names.DRIFT_CHECK_TIMESTAMP}{{{sel}}})", "age"),),
            unit="s",
            kind="stat",
            width=4,
        ),
    ]
    loop = [
        PanelSpec(
            "Pipeline run failed",
            "1 when the newest training pipeline run failed.",
            (q(f"max({names.PIPELINE_FAILED}{{{sel}}})", "failed"),),
            kind="stat",
            width=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        PanelSpec(
            "Gates",
            "1 when the newest run's contract gate stopped it or its promotion gate rejected the candidate.",
            (q(f"max by (gate) ({names.GATE_FAILED}{{{sel}}})", "{{gate}}"),),
            kind="stat",
            width=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        PanelSpec(
            "Since the last pipeline run",
            "Seconds since the newest training pipeline run.",
            (q(f"time() - max({names.PIPELINE_TIMESTAMP}{{{sel}}})", "age"),),
            unit="s",
            kind="stat",
            width=4,
        ),
        PanelSpec(
            "Since the last retrain decision",
            "Seconds since the newest retrain started, and since the newest refused on a drift verdict.",
            (q(f"time() - max by (decision) ({names.RETRAIN_DECISION}{{{sel}}})", "{{decision}}"),),
            unit="s",
            kind="stat",
            width=4,
        ),
        PanelSpec(
            "Feature freshness lag",
            "Materialization lag per feature view against features.freshness_sla.",
            (
                q(f'max by (view) ({names.FRESHNESS_LAG}{{project="{config.project}"}})', "{{view}}"),
                q(f'max({names.FRESHNESS_SLA}{{project="{config.project}"}})', "SLA"),
            ),
            unit="s",
        ),
    ]
    rows = {"Serving": serving, "Drift": drift, "Pipeline, retraining, features": loop}
    if config.stream is not None:
        rows["Streaming features"] = _stream_panels(config)
    return rows


def _stream_panels(config: Config) -> list[PanelSpec]:
    """The stream worker's freshness per feature view (``kfloop stream run``'s /metrics)."""
    sel = f'project="{config.project}"'
    rate = "[$__rate_interval]"
    sla = parse_duration(config.features.freshness_sla).total_seconds()
    return [
        PanelSpec(
            "Push lag p50 / p99 by view",
            "Seconds from an event's timestamp to its feature values being written online, per feature view, over "
            "every worker.",
            tuple(
                Query(
                    f"histogram_quantile({p}, sum by (view, le) "
                    f"(rate({names.FEATURE_PUSH_LAG}_bucket{{{sel}}}{rate})))",
                    f"p{int(p * 100)} {{{{view}}}}",
                )
                for p in (0.5, 0.99)
            ),
            unit="s",
        ),
        PanelSpec(
            "Age of the newest online value",
            f"Wall-clock seconds since the event time of the newest value online, per feature view (the youngest over "
            f"the workers, each reporting what it wrote); features.freshness_sla is {config.features.freshness_sla}.",
            (Query(f"min by (view) ({names.FEATURE_ONLINE_AGE}{{{sel}}})", "{{view}}"),),
            unit="s",
            thresholds=((None, "green"), (sla, "red")),
        ),
        PanelSpec(
            "Stream records by outcome",
            "Records the workers read per second: applied online, or why not (the outcome).",
            (Query(f"sum by (outcome) (rate({names.STREAM_RECORDS}_total{{{sel}}}{rate}))", "{{outcome}}"),),
            unit="ops",
        ),
    ]


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel:
    panel: timeseries.Panel | stat.Panel
    if spec.kind == "timeseries":
        legend = gc.VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)
        panel = (
            timeseries.Panel()
            .legend(legend.show_legend(True))
            .tooltip(gc.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
        )
    else:  # the newest value of each series
        panel = stat.Panel().reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel = panel.title(spec.title)
    panel = panel.description(spec.description).unit(spec.unit).datasource(DATASOURCE).span(spec.width).height(8)
    steps = [Threshold(value=v, color=c) for v, c in spec.thresholds]
    panel = panel.thresholds(gd.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    for i, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + i))
        if spec.kind == "stat":  # the value now, not every value in the range (a switched-away version)
            target = target.instant()
        panel = panel.with_target(target.datasource(DATASOURCE))
    return panel


def build_dashboard(config: Config) -> dict:
    """The dashboard as Grafana's JSON model (a dict)."""
    board = (
        gd.Dashboard(f"kfloop: {config.project}")
        .uid(f"kfloop-{config.project}"[:40])
        .description(f"Serving, drift and pipeline metrics of {config.project} (model {config.training.model_name}).")
        .tags(["kfloop", config.project])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, specs in _panels(config).items():
        board = board.with_row(gd.Row(title))
        for spec in specs:
            board = board.with_panel(_panel(spec))
    body = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(body["panels"], start=1):  # stable ids: links (viewPanel=N) keep working
        panel["id"] = number
    return body


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard's panels (what a test checks with promtool)."""
    return [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]


def render_dashboard(config: Config, origin: str) -> str:
    """The JSON file: stable key order, with a note saying where it came from."""
    body = {HEADER_KEY: f"GENERATED by `kfloop grafana` from {origin}: do not edit; `make compile` rewrites it."}
    return json.dumps(body | build_dashboard(config), indent=2, sort_keys=True) + "\n"


def write_dashboard(config: Config, out: Path, origin: str) -> Path:
    """Write the rendered dashboard to ``out`` atomically."""
    body = render_dashboard(config, origin).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda fh: fh.write(body))
    return out
