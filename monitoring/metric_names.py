"""The names of the Prometheus metrics kfloop exports, in one place: the exporters (serving's ``/metrics``,
the drift check's verdict files, the loop's event files) define their metrics with them, and the alert rules
and the Grafana dashboard query them, so a rename cannot leave a rule or a panel watching nothing.

A counter is named without ``_total`` (prometheus_client appends it on export); ``*_TOTAL`` is what a query
reads. Histograms export ``_bucket``, ``_sum`` and ``_count``.
"""

from __future__ import annotations

from kfloop.monitoring.event_metrics import (
    FEATURE_ONLINE_AGE,
    FEATURE_PUSH_LAG,
    FEATURE_STALE,
    FRESHNESS_LAG,
    FRESHNESS_SLA,
    GATE_FAILED,
    PIPELINE_FAILED,
    PIPELINE_RUNS,
    PIPELINE_TIMESTAMP,
    REPORT_DELIVERY,
    REPORT_DELIVERY_TIMESTAMP,
    REPORT_TIMESTAMP,
    RETRAIN_DECISION,
    STREAM_RECORDS,
)

# the loop's events (kfloop.monitoring.event_metrics; kfloop.slo.runs writes the runs counter)
PIPELINE_RUNS_TOTAL = f"{PIPELINE_RUNS}_total"

# serving (kfloop.serving.metrics)
REQUESTS = "kfloop_requests"
REQUESTS_TOTAL = f"{REQUESTS}_total"
REQUEST_SECONDS = "kfloop_request_seconds"
LOOKUP_SECONDS = "kfloop_feature_lookup_seconds"
MODEL_VERSION_INFO = "kfloop_model_version_info"
STORE_UP = "kfloop_online_store_up"
MODEL_REFUSED = "kfloop_model_refused"
RELOAD_ERRORS = "kfloop_model_reload_errors"
CONTRACT_VIOLATIONS = "kfloop_contract_violations"

# the drift check (kfloop.monitoring.metrics)
DRIFT_VERDICT = "kfloop_drift_verdict"
DRIFT_WINDOW_ROWS = "kfloop_drift_window_rows"
DRIFT_CHECK_TIMESTAMP = "kfloop_drift_check_timestamp_seconds"
DRIFT_SHARE = "kfloop_drift_share"
DRIFT_SCORE = "kfloop_drift_score"
DRIFT_THRESHOLD = "kfloop_drift_threshold"
DRIFT_DETECTED = "kfloop_drift_detected"
WINDOW_QUALITY = "kfloop_drift_window_quality_score"
WINDOW_FAILED_ROWS = "kfloop_drift_window_failed_rows"

__all__ = [
    "CONTRACT_VIOLATIONS",
    "DRIFT_CHECK_TIMESTAMP",
    "DRIFT_DETECTED",
    "DRIFT_SCORE",
    "DRIFT_SHARE",
    "DRIFT_THRESHOLD",
    "DRIFT_VERDICT",
    "DRIFT_WINDOW_ROWS",
    "FEATURE_ONLINE_AGE",
    "FEATURE_PUSH_LAG",
    "FEATURE_STALE",
    "FRESHNESS_LAG",
    "FRESHNESS_SLA",
    "GATE_FAILED",
    "LOOKUP_SECONDS",
    "MODEL_REFUSED",
    "MODEL_VERSION_INFO",
    "PIPELINE_FAILED",
    "PIPELINE_RUNS",
    "PIPELINE_RUNS_TOTAL",
    "PIPELINE_TIMESTAMP",
    "RELOAD_ERRORS",
    "REPORT_DELIVERY",
    "REPORT_DELIVERY_TIMESTAMP",
    "REPORT_TIMESTAMP",
    "REQUESTS",
    "REQUESTS_TOTAL",
    "REQUEST_SECONDS",
    "RETRAIN_DECISION",
    "STORE_UP",
    "STREAM_RECORDS",
    "WINDOW_FAILED_ROWS",
    "WINDOW_QUALITY",
]
