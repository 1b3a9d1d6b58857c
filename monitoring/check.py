"""The drift check's pure core: a window's monitored columns against a reference profile → a verdict.

Each column (every model input, and the prediction) is tested with ``monitoring``'s stattest and threshold
for it, or Evidently's default choice where none is set (:func:`kfloop.monitoring.drift.column_drift`). The
window drifts when the share of drifted columns reaches ``monitoring.drift_share``: Evidently's
dataset-drift rule, with the prediction counted as one column as Evidently counts it. A window of fewer than
``monitoring.min_rows`` rows is ``insufficient_data``: too few rows to test, so nothing is tested and
nothing may be triggered by it.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from kfloop.config import MonitoringConfig
from kfloop.errors import ConfigError, EmptyColumnError
from kfloop.monitoring.drift import ColumnDrift, column_drift
from kfloop.monitoring.profile import ReferenceProfile

DRIFT, NO_DRIFT, INSUFFICIENT_DATA = "drift", "no_drift", "insufficient_data"
VERDICTS = (DRIFT, NO_DRIFT, INSUFFICIENT_DATA)


def _test(
    monitoring: MonitoringConfig, profile: ReferenceProfile, frame: pd.DataFrame, column: str, prediction: bool
) -> ColumnDrift | None:
    """The column's drift test; None when a side has no value to test (Evidently refuses such a column)."""
    stattest, threshold = monitoring.drift_test(column, profile.columns[column].kind, prediction)
    try:
        return column_drift(profile.columns[column], frame[column], stattest=stattest, threshold=threshold)
    except EmptyColumnError:
        return None
    except ValueError as err:  # a test that does not apply to the column's kind
        if stattest is None:
            raise
        key = "monitoring.prediction" if prediction else f"monitoring.columns.{column}"
        raise ConfigError(f"{key}: stattest {stattest!r} cannot test {column!r}: {err}") from err


def drift_verdict(
    monitoring: MonitoringConfig, profile: ReferenceProfile, frame: pd.DataFrame, prediction: str
) -> dict:
    """``{"verdict", "drift_share", "share", "columns", "drifted", "prediction", "untested"}`` for ``frame``
    (the window's monitored columns, spelled by ``monitored_frame``); ``prediction`` names the prediction
    column of the profile. Columns of the profile with no value in the window are untested, not drifted."""
    rows = len(frame)
    base = {"drift_share": monitoring.drift_share, "min_rows": monitoring.min_rows}
    if rows < monitoring.min_rows:
        return {
            **base,
            "verdict": INSUFFICIENT_DATA,
            "reason": f"{rows} rows in the window, fewer than monitoring.min_rows ({monitoring.min_rows})",
            "share": None,
            "columns": [],
            "drifted": [],
            "prediction": None,
            "untested": [],
        }
    results: list[ColumnDrift] = []
    chosen = monitoring.features
    untested = [c for c in chosen or () if c not in profile.columns]  # an input the version was not trained on
    for column in [c for c in profile.columns if c == prediction or chosen is None or c in chosen]:
        result = _test(monitoring, profile, frame, column, column == prediction) if column in frame.columns else None
        if result is None:
            untested.append(column)
        else:
            results.append(result)
    drifted = [r for r in results if r.drifted]
    share = len(drifted) / len(results) if results else 0.0
    verdict = DRIFT if results and share >= monitoring.drift_share else NO_DRIFT
    by_name = {r.column: _record(r, r.column == prediction) for r in results}
    return {
        **base,
        "verdict": verdict,
        "share": share,
        "columns": list(by_name.values()),
        "drifted": [by_name[r.column] for r in drifted if r.column != prediction],
        "prediction": by_name.get(prediction),
        "untested": untested,
    }


def _record(result: ColumnDrift, prediction: bool) -> dict:
    return {**asdict(result), "score": float(result.score), "drifted": bool(result.drifted), "prediction": prediction}
