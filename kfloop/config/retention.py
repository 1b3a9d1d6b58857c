"""The ``governance.retention`` section: how long each kind of data is kept (``kfloop retention apply``).

Each period is a duration (90d, 720h) counted back from the run; null keeps that kind of data forever (the
default: nothing is removed until a period is set). Rows and files older than ``now - period`` are removed.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration

_PERIODS = ("lake", "inference_log", "training_sets", "reports", "quarantine", "monitoring")


class RetentionConfig(Section):
    """Retention periods per kind of data; null: kept forever."""

    lake: str | None = Field(
        None,
        description="Raw lake datasets (the source and every attribute table with a time column) and their clean "
        "datasets: rows whose event time is older are removed through the lake's commit (whole partitions, and "
        "the older rows of the partition at the boundary). Snapshot tables (no time column) are never trimmed.",
    )
    inference_log: str | None = Field(
        None, description="The inference log: rows logged longer ago are removed (whole date partitions or rows)."
    )
    training_sets: str | None = Field(
        None,
        description="Training sets made longer ago are removed, except the newest and those of the champion, the "
        "candidates and the version a rollback would restore.",
    )
    reports: str | None = Field(
        None, description="Data-quality and periodic reports (and their deliveries) made longer ago; latest.json stays."
    )
    quarantine: str | None = Field(
        None, description="Quarantined rows (unreadable, too late, failing the contract) of runs longer ago."
    )
    monitoring: str | None = Field(
        None,
        description="Drift checks with their Evidently snapshots and reports, serving's request samples and the "
        "features' freshness samples older than this (latest.json / latest.prom stay).",
    )

    @field_validator(*_PERIODS)
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value).total_seconds() <= 0:
            raise ValueError(f"{value!r}: a retention period must be longer than 0s (null keeps data forever)")
        return value

    def periods(self) -> dict[str, str | None]:
        """Every kind of data and its period (null: kept forever), in the order `kfloop retention apply` goes."""
        return {name: getattr(self, name) for name in _PERIODS}
