"""Our fast tests registered in Evidently's stattest registry, so Evidently reports and its UI show our scores.

How: :func:`register` calls ``evidently.legacy.calculations.stattests.registry.register_stattest`` (the
registry both Evidently APIs use: the new ``DataDriftPreset``/``ValueDrift`` resolve ``method`` names
through it) with one :class:`StatTest` per test, named ``kfloop_<evidently name>`` (``kfloop_ks``,
``kfloop_wasserstein``, ``kfloop_chisquare``, ``kfloop_jensenshannon``, ``kfloop_z``), plus ``kfloop``,
which makes Evidently's default choice per column like ``DataDriftPreset()`` with no method does::

    from kfloop.monitoring.evidently_tests import bound_profile, register
    register()
    with bound_profile(profile):  # optional: reuse the cached reference profile
        Report([DataDriftPreset(method="kfloop")]).run(current, reference)

Evidently hands a registered test the reference and current column (nulls and ±inf already dropped) and
a threshold. Inside :func:`bound_profile`, the reference column's profile is taken from the bound
:class:`ReferenceProfile` (matched by column name and non-null size, or by name alone with ``any_size``:
a report drawn from a sample of the reference), so the reference is not re-sorted; otherwise it is profiled
on the fly.

Limits:

- an Evidently report still needs the reference frame (its widgets draw histograms and correlations from
  it) and does its own per-column work, so a report is no faster than Evidently's: the fast path is
  :func:`kfloop.monitoring.drift.dataset_drift`, the report is for people.
- ``kfloop`` picks a different test per column but a ``StatTest`` has one display name and one default
  threshold: its default threshold is NaN, meaning "the chosen test's own" (the report then shows NaN as
  threshold); pass ``threshold=`` or use a ``kfloop_<name>`` test to show a real one.
- categories are compared as text (see :func:`kfloop.monitoring.profile.category_key`).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
from evidently.legacy.core import ColumnType

from kfloop.monitoring.drift import ALLOWED_KINDS, DEFAULT_THRESHOLDS, DISPLAY_NAMES, column_drift
from kfloop.monitoring.profile import ColumnProfile, Kind, ReferenceProfile, profile_column

PREFIX = "kfloop"
_KINDS: dict[str, ColumnType] = {"numeric": ColumnType.Numerical, "categorical": ColumnType.Categorical}
_BOUND: contextvars.ContextVar[tuple[ReferenceProfile, bool] | None] = contextvars.ContextVar(
    "kfloop_bound_profile", default=None
)
_registered: dict[str, StatTest] = {}


@contextmanager
def bound_profile(profile: ReferenceProfile, any_size: bool = False) -> Iterator[None]:
    """Within the block, registered tests take reference columns from ``profile`` instead of sorting them.
    ``any_size``: also when Evidently's reference column is not the profile's size (a sample of it drawn for a
    report's widgets), so the scores stay the whole profile's."""
    token = _BOUND.set((profile, any_size))
    try:
        yield
    finally:
        _BOUND.reset(token)


def _kind(feature_type: ColumnType) -> Kind:
    if feature_type == ColumnType.Numerical:
        return "numeric"
    if feature_type == ColumnType.Categorical:
        return "categorical"
    raise ValueError(f"kfloop drift tests support numerical and categorical columns, not {feature_type.value}")


def _reference(reference: pd.Series, kind: Kind) -> ColumnProfile:
    bound = _BOUND.get()
    if bound is not None:
        profile, any_size = bound
        col = profile.columns.get(str(reference.name))
        if col is not None and col.kind == kind and (any_size or col.count == len(reference)):
            return col
    return profile_column(reference, str(reference.name), kind)


def _make(stattest: str | None):
    def run(reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float) -> tuple[float, bool]:
        thr = None if threshold is None or math.isnan(threshold) else threshold
        kind = _kind(feature_type)
        result = column_drift(_reference(reference, kind), current, stattest, thr)
        return result.score, result.drifted

    run.__name__ = f"{PREFIX}_{stattest}" if stattest else PREFIX
    return run


def register() -> dict[str, StatTest]:
    """Register the tests (idempotent); returns them by name."""
    if _registered:
        return dict(_registered)
    tests = {
        PREFIX: StatTest(
            name=PREFIX,
            display_name="kfloop (Evidently's default choice)",
            allowed_feature_types=[ColumnType.Numerical, ColumnType.Categorical],
            default_threshold=math.nan,
        )
    }
    for name in DEFAULT_THRESHOLDS:
        tests[f"{PREFIX}_{name}"] = StatTest(
            name=f"{PREFIX}_{name}",
            display_name=f"{DISPLAY_NAMES[name]} (kfloop)",
            allowed_feature_types=[_KINDS[k] for k in ALLOWED_KINDS[name]],
            default_threshold=DEFAULT_THRESHOLDS[name],
        )
    for name, test in tests.items():
        register_stattest(test, _make(None if name == PREFIX else name[len(PREFIX) + 1 :]))
    _registered.update(tests)
    return dict(_registered)
