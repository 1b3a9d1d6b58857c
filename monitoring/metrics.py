"""A drift check's verdict as Prometheus metrics (text exposition format), for a textfile collector or a
scrape of the workspace file.

Metric families are built from the verdict record in a registry of their own (not the process's default
one), so a check renders exactly its own values and nothing a server process also exports.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kfloop.monitoring import metric_names as names
from kfloop.monitoring.check import VERDICTS


class _Verdict(Collector):
    """The families of one verdict record."""

    def __init__(self, record: dict) -> None:
        self.record = record

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self.record
        base = [r["model"], r["model_version"]]
        labels = ["model", "version"]
        verdict = GaugeMetricFamily(
            names.DRIFT_VERDICT,
            "1 for the verdict of the newest drift check, 0 for the others.",
            labels=[*labels, "verdict"],
        )
        for name in VERDICTS:
            verdict.add_metric([*base, name], 1.0 if r["verdict"] == name else 0.0)
        yield verdict
        rows = GaugeMetricFamily(names.DRIFT_WINDOW_ROWS, "Rows in the drift check's window.", labels=labels)
        rows.add_metric(base, float(r["window"]["rows"]))
        yield rows
        checked = GaugeMetricFamily(names.DRIFT_CHECK_TIMESTAMP, "When the drift check ran (Unix time).", labels=labels)
        checked.add_metric(base, float(r["checked_at_unix"]))
        yield checked
        drift = r["drift"]
        if drift["share"] is not None:
            share = GaugeMetricFamily(
                names.DRIFT_SHARE, "Share of tested columns (inputs and prediction) that drifted.", labels=labels
            )
            share.add_metric(base, float(drift["share"]))
            yield share
        score = GaugeMetricFamily(
            names.DRIFT_SCORE,
            "Drift test score of a column (p-value or distance).",
            labels=[*labels, "column", "stattest"],
        )
        threshold = GaugeMetricFamily(
            names.DRIFT_THRESHOLD, "Drift test threshold of a column.", labels=[*labels, "column", "stattest"]
        )
        drifted = GaugeMetricFamily(names.DRIFT_DETECTED, "1 when a column drifted.", labels=[*labels, "column"])
        for col in drift["columns"]:
            score.add_metric([*base, col["column"], col["stattest"]], float(col["score"]))
            threshold.add_metric([*base, col["column"], col["stattest"]], float(col["threshold"]))
            drifted.add_metric([*base, col["column"]], 1.0 if col["drifted"] else 0.0)
        yield score
        yield threshold
        yield drifted
        quality = r["data_quality"]
        q_score = GaugeMetricFamily(
            names.WINDOW_QUALITY,
            "Data-quality score of the window under the contract (0-100).",
            labels=labels,
        )
        q_score.add_metric(base, float(quality["score"]))
        yield q_score
        failed = GaugeMetricFamily(
            names.WINDOW_FAILED_ROWS, "Window rows failing a contract check.", labels=[*labels, "check"]
        )
        for check in quality["checks"]:
            failed.add_metric([*base, check["check"]], float(check["failed"]))
        yield failed


def render_metrics(record: dict) -> bytes:
    """The verdict record's metrics in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Verdict(record))
    return generate_latest(registry)
