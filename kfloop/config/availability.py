"""``source.available_after``: when each column's value becomes known, so no stage uses it earlier.

A value stored with an event is not always known at the event's time: an outcome measured at completion,
a label confirmed days later. Declared per column, as a delay after the event (``"2h"``) or as another
timestamp column holding the time it became known (``{at: completed_at}``; null: not known yet), it is
counted by aggregates only from then on and cannot be a request feature. ``features.label_delay`` with an
aggregate's ``label_delay: true`` is the label's case of the delay form, kept for old configs.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from kfloop.config._base import Section
from kfloop.config.contract import DURATION_PATTERN, parse_duration

if TYPE_CHECKING:
    from kfloop.config.features import FeaturesConfig
    from kfloop.config.source import SourceConfig


class KnownAt(Section):
    """The value is known at the time in another column (never before the row's own event time)."""

    at: str = Field(min_length=1, description="Timestamp column holding when the value became known; null: not yet.")


#: A duration checked by :func:`check_available_after` (a pattern here would give pydantic's union-branch errors).
Delay = Annotated[str, Field(description=f"A delay after the event time, {DURATION_PATTERN}.")]
Availability = Delay | KnownAt

#: What the aggregation engine needs per column: a delay after the event, or the column that holds the time.
Known = timedelta | str


def resolve(value: Availability) -> Known:
    """The delay as a timedelta, or the name of the column holding the time the value became known."""
    return value.at if isinstance(value, KnownAt) else parse_duration(value)


def known_after(
    column: str, label_delay_flag: bool, label_delay: timedelta, available_after: Mapping[str, Availability]
) -> Known | None:
    """When an aggregate of ``column`` may use a row's value: ``None`` at the event itself (the default)."""
    if label_delay_flag:
        return label_delay
    value = available_after.get(column)
    return None if value is None else resolve(value)


def check_available_after(
    available_after: Mapping[str, Availability],
    columns: Mapping[str, object],
    never_late: Mapping[str, str],
    timestamp_type: object,
) -> None:
    """Columns and ``at`` columns are declared, ``at`` columns are timestamps, and nothing that identifies or
    times the row itself (``never_late``: column → why) is declared late."""
    for col, value in available_after.items():
        where = f"available_after.{col}"
        if col not in columns:
            raise ValueError(f"{where}: not a column declared in source.columns")
        if col in never_late:
            raise ValueError(f"{where}: {col!r} is {never_late[col]}, known at the event by definition")
        if isinstance(value, str):
            try:
                parse_duration(value)
            except ValueError as err:
                raise ValueError(f"{where}: {err}, or {{at: <timestamp column>}}") from err
        else:
            if value.at not in columns:
                raise ValueError(f"{where}.at: {value.at!r} is not a column declared in source.columns")
            if columns[value.at] != timestamp_type:
                raise ValueError(f"{where}.at: {value.at!r} must have type 'timestamp'")


def late_derived(source: SourceConfig) -> dict[str, str]:
    """Derived columns computed from a late-known column and not declared themselves: name → that input. Such a
    value is no better known than its inputs (a label thresholded from an outcome measured at completion)."""
    if not source.derived:
        return {}
    from kfloop.expressions import parse  # Arrow and pandas: only when columns are derived

    out: dict[str, str] = {}
    for name, col in source.derived.items():
        tree = parse(col.expression)
        calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}
        late = sorted(used & {*source.available_after, *out})
        if late and name not in source.available_after:
            out[name] = late[0]
    return out


def check_inputs_known(source: SourceConfig, features: FeaturesConfig) -> None:
    """A late-known column is no request feature (the caller does not know it yet), no view's entity; a column
    derived from one is declared too before a view aggregates it; the label's availability is said once."""
    declared, label, derived = source.available_after, source.label_column, late_derived(source)
    late = [c for c in features.request_features if c in declared and c != label]
    if late:
        raise ValueError(
            f"features.request_features: {', '.join(late)} known only after the event (source.available_after), "
            "so not at request time: it cannot be a model input; aggregate it in a feature view instead"
        )
    late = [f"{c} (from {derived[c]})" for c in features.request_features if c in derived and c != label]
    if late:
        raise ValueError(
            f"features.request_features: {', '.join(late)} derived from a column known only after the event "
            "(source.available_after), so not at request time: it cannot be a model input"
        )
    for i, view in enumerate(features.views):
        where = f"features.views.{i} ({view.name})"
        if view.entity in declared or view.entity in derived:
            raise ValueError(f"{where}: entity {view.entity!r} is known only after the event; a view's entity is not")
        if any(a.label_delay and a.column in declared for a in view.aggregates):
            raise ValueError(
                f"{where}: label_delay: true and source.available_after.{label} both say when the label is known; "
                "drop label_delay (available_after applies to every aggregate of the column)"
            )
        for a in view.aggregates:
            if a.column in derived and not a.label_delay:
                raise ValueError(
                    f"{where}: {a.column!r} is derived from {derived[a.column]!r}, known only after the event: "
                    f"declare when it is known in source.available_after.{a.column}"
                )
