"""A drift check as Evidently sees it: an Evidently snapshot (JSON) and its HTML report, with our scores.

:func:`drift_snapshot` runs an Evidently ``Report`` on the window against a reference frame rebuilt from the
champion's profile (:func:`reference_frame`):

- ``DataDriftPreset`` over the tested columns, method ``kfloop`` (our registered fast tests), each column
  pinned to the test and threshold the verdict resolved from ``monitoring`` (``kfloop_<test>``, so the report
  names the real test and threshold), under :func:`~kfloop.monitoring.evidently_tests.bound_profile`: every
  score in the report is the verdict's own, computed from the stored profile;
- the prediction's distribution: quantiles and mean of a numeric prediction, class counts of a multiclass one;
- a :class:`KfloopValue` carrying what Evidently does not compute: the window's data-quality score under the
  contract (so Evidently's UI can plot it next to the drift).

:func:`model_snapshot` makes one snapshot per model version with its metrics (:class:`KfloopValue` too), for
the dashboard's model-metrics panel: one point per version rather than one per check.

Cost: Evidently's own per-column work and plotly widgets, not our tests: at the demo size (10 000-row window,
20 columns, ~140 000-row reference) the verdict takes ~0.06 s and this snapshot with its HTML 3-8 s on 2 busy
cores, about the same at 10 000 or 50 000 reference rows (the widgets dominate).

The reference frame holds each profiled column's values (numeric: the sorted values; categorical: each
category repeated by its count; then the nulls). Row order is lost, which no drift test reads (each tests a
column's marginal distribution); only widgets that pair columns (none in these metrics) would. Past
``REPORT_REFERENCE_ROWS`` rows the report draws its histograms from a seeded sample of that frame, while
the scores still come from the whole profile (the bound profile is used whatever the sample size).
"""

from __future__ import annotations

import contextvars
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Snapshot
from evidently.legacy.utils import NumpyEncoder
from evidently.metrics import MeanValue, QuantileValue, UniqueValueCount
from evidently.presets import DataDriftPreset

from kfloop.monitoring.drift import ALLOWED_KINDS
from kfloop.monitoring.evidently_tests import PREFIX, bound_profile, register
from kfloop.monitoring.profile import ReferenceProfile

#: Most reference rows the report's widgets are drawn from (a seeded sample past it; scores use the profile).
REPORT_REFERENCE_ROWS = 50_000
#: Quantiles of a numeric prediction the snapshot records (the prediction-distribution panel plots them).
PREDICTION_QUANTILES = (0.1, 0.5, 0.9)
#: Name of the window's data-quality score among the snapshot's :class:`KfloopValue` metrics.
DATA_QUALITY = "data_quality_score"
#: Prefix of a version's model metrics among them (``model.<metric>``), in the version's own snapshot.
MODEL_METRIC = "model."
#: Tag of a version's model-metrics snapshot (one per version, beside the checks' snapshots).
MODEL_TAG = "model_metrics"

_VALUES: contextvars.ContextVar[Mapping[str, float] | None] = contextvars.ContextVar("kfloop_values", default=None)


class KfloopValue(SingleValueMetric):
    """A number kfloop computed, carried in an Evidently snapshot so Evidently's UI can plot it. Its value is
    not a parameter (parameters name a series in the UI): it is read from :func:`values` while the report runs.
    """

    name: str
    model_version: str | None = None  # a parameter: one series per version (a model metric)

    def _default_tests(self, context: Any) -> list:
        return []

    def _default_tests_with_reference(self, context: Any) -> list:
        return []


class KfloopValueCalculation(SingleValueCalculation[KfloopValue]):
    def calculate(self, context: Any, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        value = (_VALUES.get() or {}).get(self.metric.name)
        if value is None:
            raise ValueError(f"no value for {self.metric.name!r}: run the report inside kfloop's values()")
        return self.result(float(value))

    def display_name(self) -> str:
        return f"kfloop: {self.metric.name}"


@contextmanager
def values(named: Mapping[str, float]) -> Iterator[None]:
    """Within the block, :class:`KfloopValue` metrics report these values."""
    token = _VALUES.set(dict(named))
    try:
        yield
    finally:
        _VALUES.reset(token)


def reference_frame(
    profile: ReferenceProfile, columns: list[str], max_rows: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, bool]:
    """The profile's ``columns`` as a frame (each column's values, then its nulls; row order not kept) and
    whether it is a seeded sample of ``max_rows`` rows of that frame."""
    data: dict[str, np.ndarray] = {}
    for name in columns:
        col = profile.columns[name]
        if col.kind == "numeric":
            values = col.values if col.values is not None else np.empty(0)
            data[name] = np.concatenate((values, np.full(col.nulls, np.nan)))
        else:
            counts = col.categories or {}
            keys = np.array(list(counts), dtype=object)
            cats = np.repeat(keys, np.fromiter(counts.values(), np.int64, len(counts)))
            data[name] = np.concatenate((cats, np.full(col.nulls, None, dtype=object)))
    frame = pd.DataFrame(data)
    max_rows = REPORT_REFERENCE_ROWS if max_rows is None else max_rows
    if len(frame) <= max_rows:
        return frame, False
    picked = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[picked].reset_index(drop=True), True


def _prediction_metrics(prediction: str, kind: str) -> list:
    if kind == "numeric":
        return [
            MeanValue(column=prediction),
            *(QuantileValue(column=prediction, quantile=q) for q in PREDICTION_QUANTILES),
        ]
    return [UniqueValueCount(column=prediction)]


def _method(column: dict, kind: str) -> str:
    """Our registered test for a verdict's column: ``kfloop_<test>``, or ``kfloop`` (the same default choice)
    where Evidently would refuse the named test for the column's kind (chi-square or Z on a numeric column
    with few values: Evidently's default choice, not a test one may ask for by name)."""
    stattest = column["stattest"]
    return f"{PREFIX}_{stattest}" if kind in ALLOWED_KINDS[stattest] else PREFIX


def drift_snapshot(
    record: dict,
    profile: ReferenceProfile,
    window: pd.DataFrame,
    prediction: str,
    seed: int = 0,
) -> tuple[Snapshot, dict]:
    """The Evidently snapshot of a verdict ``record`` (not insufficient_data) on ``window`` (the monitored
    frame the verdict tested), and what its reference frame was (rows, sampled)."""
    register()
    drift = record["drift"]
    tested = [c["column"] for c in drift["columns"]]
    numeric = [c for c in tested if profile.columns[c].kind == "numeric"]
    categorical = [c for c in tested if profile.columns[c].kind == "categorical"]
    reference, sampled = reference_frame(profile, tested, seed=seed)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=tested,
        drift_share=drift["drift_share"],
        method=PREFIX,
        per_column_method={c["column"]: _method(c, profile.columns[c["column"]].kind) for c in drift["columns"]},
        per_column_threshold={c["column"]: c["threshold"] for c in drift["columns"]},
    )
    named = {DATA_QUALITY: float(record["data_quality"]["score"])}
    items: list = [preset]
    if prediction in tested:
        items += _prediction_metrics(prediction, profile.columns[prediction].kind)
    items += [KfloopValue(name=DATA_QUALITY)]
    report = Report(items, include_tests=True)
    with bound_profile(profile, any_size=sampled), values(named):
        snapshot = report.run(
            Dataset.from_pandas(window[tested], data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
            timestamp=datetime.fromisoformat(record["checked_at"]).replace(tzinfo=None),
            metadata={
                "model": record["model"],
                "model_version": record["model_version"],
                "check_id": record["check_id"],
                "verdict": record["verdict"],
            },
            tags=[record["verdict"], record["model_version"]],
            name=f"{record['model']} {record['model_version']} {record['check_id']}",
        )
    return snapshot, {"rows": len(reference), "sampled": sampled}


def model_snapshot(model: str, version: str, metrics: Mapping[str, float], split: str, at: datetime) -> Snapshot:
    """A version's model metrics (``model.<name>``, one series per version) as a snapshot of their own, tagged
    ``MODEL_TAG``: the dashboard's model-metrics panel reads these, one point per version, not per check."""
    finite = {MODEL_METRIC + k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    report = Report([KfloopValue(name=n, model_version=version) for n in finite])
    with values(finite):
        return report.run(
            Dataset.from_pandas(pd.DataFrame({"version": [version]})),
            None,
            timestamp=at.astimezone(UTC).replace(tzinfo=None),
            metadata={"model": model, "model_version": version, "split": split},
            tags=[MODEL_TAG, version],
            name=f"{model} {version} model metrics ({split})",
        )


def snapshot_json(snapshot: Snapshot) -> str:
    """The snapshot as Evidently stores it in a workspace (``Snapshot.load``/``loads`` read it back)."""
    return json.dumps(snapshot.to_snapshot_model().dict(), cls=NumpyEncoder)


def snapshot_html(snapshot: Snapshot) -> str:
    """The snapshot's standalone HTML report."""
    return snapshot.get_html_str(as_iframe=False)


def drift_scores(snapshot: dict) -> dict[str, tuple[str, float]]:
    """Per column ``(method, score)`` of the ``ValueDrift`` results of a stored snapshot (its JSON, parsed)."""
    out = {}
    for result in snapshot["metric_results"].values():
        params = ((result.get("metric_value_location") or {}).get("metric") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift"):
            out[params["column"]] = (params["method"], float(result["value"]))
    return out
