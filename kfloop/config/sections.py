"""The ``monitoring`` section: what the drift check compares, over which window, and by which tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration

#: The drift tests the check computes (Evidently's names; kfloop.monitoring.drift implements them).
Stattest = Literal["ks", "wasserstein", "chisquare", "jensenshannon", "z"]
NUMERIC_TESTS = ("ks", "wasserstein", "jensenshannon")
CATEGORICAL_TESTS = ("chisquare", "z", "jensenshannon")


class DriftTest(Section):
    """How one column is tested for drift. Null keeps Evidently's own choice for the column (by its type,
    its number of values and the reference's size), so a check agrees with Evidently's default report."""

    stattest: Stattest | None = Field(
        None,
        description="One of Evidently's tests: ks, wasserstein (numeric), chisquare, z (categorical), "
        "jensenshannon (either); null: Evidently's default choice.",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="The test's drift cut-off (a p-value below it, or a distance above it, is drift); null: the "
        "test's own default.",
    )


class MonitoringWindow(Section):
    """The inference-log rows a check compares with the reference: the champion's newest rows, by count
    and/or by age. At least one bound is set; with both, the newest ``rows`` of the last ``duration``."""

    rows: int | None = Field(10_000, ge=1, description="The newest this many rows scored by the champion.")
    duration: str | None = Field(
        None,
        description="Only rows logged within this long before the check (90s, 15m, 24h, 7d); null: no age bound.",
    )

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> MonitoringWindow:
        if self.rows is None and self.duration is None:
            raise ValueError("set rows, duration or both: a window without either is the whole log")
        return self


class RetrainConfig(Section):
    """Retraining on drift (``kfloop monitor check --retrain``, ``kfloop monitor webhook``). An episode is the run
    of drift verdicts against one champion version since its last no_drift verdict (insufficient_data neither
    starts nor ends one): it starts at most one retrain, however many checks see it."""

    enabled: bool = Field(
        False,
        description="Every `kfloop monitor check` decides on retraining, as with --retrain (the webhook always "
        "decides).",
    )
    cooldown: str = Field(
        "6h",
        description="No retrain within this long of the last one started (90s, 15m, 24h, 7d), whatever the episode.",
    )
    run_on: Literal["local", "cluster"] = Field(
        "local",
        description="local: `kfloop run` (kfp.local) in a detached process; cluster: a run of the training "
        "pipeline through the Kubeflow Pipelines API (cluster.kfp_host) in cluster.experiment, as `kfloop submit` "
        "connects (the scheduled drift check needs cluster).",
    )
    pipeline_package: str | None = Field(
        None,
        min_length=1,
        description="The compiled pipeline (`kfloop compile`) a cluster retrain submits; null: compiled from this "
        "config when the retrain starts (what a scheduled drift check in a pod does: the image has the pipeline).",
    )

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        parse_duration(value)
        return value


class MonitoringConfig(Section):
    """The drift check (``kfloop monitor check``): a window of the inference log against the champion's
    reference profile (built from its training rows when it was registered). Each model input and the
    prediction are tested; the window drifts when at least ``drift_share`` of those columns drift
    (Evidently's dataset-drift rule)."""

    window: MonitoringWindow = Field(MonitoringWindow(), description="Which logged rows a check compares.")
    min_rows: int = Field(
        500,
        ge=1,
        description="A window with fewer rows gets the verdict insufficient_data (never drift): too few rows to test.",
    )
    drift_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of tested columns (model inputs and the prediction) that must drift for the verdict "
        "drift (Evidently's drift_share).",
    )
    features: tuple[str, ...] | None = Field(
        None,
        description="The model inputs the check tests (the prediction always is); null: every one. Leave out an "
        "input whose served values differ from its training values by design, e.g. a stored feature replayed "
        "from an online store that is older than the requests.",
    )
    numeric: DriftTest = Field(
        DriftTest(), description="The test of every numeric column without its own (ks, wasserstein, jensenshannon)."
    )
    categorical: DriftTest = Field(
        DriftTest(), description="The test of every categorical column without its own (chisquare, z, jensenshannon)."
    )
    columns: dict[str, DriftTest] = Field(
        default_factory=dict,
        description="Per model input: its own test, over `numeric` / `categorical` (a test of the other kind is an "
        "error at check time).",
    )
    prediction: DriftTest = Field(
        DriftTest(),
        description="The prediction column's own test (the score: numeric; the class of a multiclass model: "
        "categorical).",
    )
    retrain: RetrainConfig = Field(RetrainConfig(), description="Retraining on drift: on/off, cooldown, where it runs.")
    reference_rows: int = Field(
        200_000,
        ge=100,
        description="Most training rows a version's reference profile keeps (a seeded sample of the train split "
        "beyond it): bounds the file every check and every serving pod downloads.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringConfig:
        for kind, tests in (("numeric", NUMERIC_TESTS), ("categorical", CATEGORICAL_TESTS)):
            stattest = getattr(self, kind).stattest
            if stattest is not None and stattest not in tests:
                raise ValueError(
                    f"{kind}.stattest: {stattest} does not test {kind} columns (one of {', '.join(tests)})"
                )
        if self.window.rows is not None and self.window.rows < self.min_rows:
            raise ValueError(
                f"window.rows ({self.window.rows}) is below min_rows ({self.min_rows}): every check would be "
                "insufficient_data"
            )
        return self

    def drift_test(self, column: str, kind: str, prediction: bool = False) -> tuple[str | None, float | None]:
        """(stattest, threshold) of a ``kind`` column: its own settings, else its kind's; None is Evidently's
        default choice."""
        own = self.prediction if prediction else self.columns.get(column, DriftTest())
        default = self.numeric if kind == "numeric" else self.categorical
        return (
            own.stattest if own.stattest is not None else default.stattest,
            own.threshold if own.threshold is not None else default.threshold,
        )


def check_monitored_columns(monitoring: MonitoringConfig, inputs: Iterable[str]) -> None:
    """``monitoring.columns`` and ``monitoring.features`` name model inputs only (a typo would silently test
    nothing)."""
    known = set(inputs)
    for key, names in (("columns", monitoring.columns), ("features", monitoring.features or ())):
        unknown = sorted(c for c in names if c not in known)
        if unknown:
            raise ValueError(
                f"monitoring.{key}: not a model input (stored or request feature): {', '.join(unknown)}; "
                "the prediction is always tested (its own test: monitoring.prediction)"
            )
