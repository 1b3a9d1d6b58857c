"""The ``schedules`` section: the Argo CronWorkflows that ``kfloop schedules render`` builds (the drift check,
incremental feature materialization and the periodic report), when and how they run."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration

#: Five fields (minute hour day-of-month month day-of-week) or a macro such as @hourly: what Argo accepts.
_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( \S+){4})$")


def check_cron(value: str) -> str:
    """``value`` if it looks like a cron expression Argo accepts; a ``ValueError`` that says so otherwise."""
    if not _CRON.match(value.strip()):
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '*/15 * * * *', or @hourly)")
    return value.strip()


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class ScheduleRetry(Section):
    """How Argo retries a failed scheduled run: exponential backoff between attempts."""

    limit: int = Field(2, ge=0, le=10, description="Retries after a failed attempt (0: none).")
    backoff: str = Field("30s", description="Wait before the first retry (a duration: 30s, 2m).")
    factor: int = Field(2, ge=1, le=10, description="Each retry waits this many times longer than the one before.")
    max_backoff: str = Field("5m", description="Longest wait between two attempts.")

    @field_validator("backoff", "max_backoff")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value) or value


class FixedSchedule(Section):
    """A CronWorkflow on a cron of its own, with its deadlines (each job's class sets its defaults)."""

    cron: str = Field(description="When it runs (cron, in `schedules.timezone`).")
    suspend: bool = Field(False, description="true: rendered but not scheduled (resume with `argo cron resume`).")
    starting_deadline: str = Field(
        description="A run that could not start this long after its time is skipped (startingDeadlineSeconds)."
    )
    active_deadline: str = Field(
        description="A run (retries included) still going after this long is stopped (activeDeadlineSeconds)."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("starting_deadline", "active_deadline")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value) or value


class DriftCheckSchedule(FixedSchedule):
    """The drift check's CronWorkflow: ``kfloop monitor check`` in the project image. A drift verdict exits 3,
    so Argo lists the run as failed (visible) and does not retry it."""

    cron: str = Field("*/15 * * * *", description="When it runs (cron, in `schedules.timezone`).")
    starting_deadline: str = Field(
        "5m", description="A run that could not start this long after its time is skipped (startingDeadlineSeconds)."
    )
    active_deadline: str = Field(
        "10m", description="A run (retries included) still going after this long is stopped (activeDeadlineSeconds)."
    )


class MaterializeSchedule(Section):
    """The materialization CronWorkflow: ``kfloop features materialize`` (new feature rows computed from the
    clean dataset, written to the online store) in the project image. It keeps ``features.freshness_sla``: by
    default it runs at an interval of at most half the SLA and stops a run at the rest of the SLA, so a run that
    starts on time ends before the online features are older than the SLA allows."""

    cron: str | None = Field(
        None,
        description="When it runs (cron, in `schedules.timezone`); null: derived from `features.freshness_sla` "
        "(every ≤ half the SLA: 15m → every 5 min). A cron whose runs are further apart than the SLA is refused.",
    )
    suspend: bool = Field(False, description="true: rendered but not scheduled (resume with `argo cron resume`).")
    starting_deadline: str | None = Field(
        None,
        description="A run that could not start this long after its time is skipped (startingDeadlineSeconds); "
        "null: the schedule's interval.",
    )
    active_deadline: str | None = Field(
        None,
        description="A run (retries included) still going after this long is stopped (activeDeadlineSeconds); "
        "null: the SLA minus the interval (at least 1m).",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("starting_deadline", "active_deadline")
    @classmethod
    def _durations(cls, value: str | None) -> str | None:
        return _check_duration(value)


class ReportSchedule(FixedSchedule):
    """The periodic report's CronWorkflow: ``kfloop report`` in the project image, with ``report.period``,
    ``report.pdf`` and ``report.send``. The report is written to the workspace and its summary, with where it is,
    sent to the alert webhooks."""

    cron: str = Field(
        "0 7 * * 1",
        description="When it runs (cron, in `schedules.timezone`); the default, Mondays at 07:00, suits "
        "`report.period` 7d.",
    )
    starting_deadline: str = Field(
        "1h", description="A run that could not start this long after its time is skipped (startingDeadlineSeconds)."
    )
    active_deadline: str = Field(
        "30m", description="A run (retries included) still going after this long is stopped (activeDeadlineSeconds)."
    )


class RetentionSchedule(FixedSchedule):
    """The retention CronWorkflow: ``kfloop retention apply`` in the project image, removing what is past the periods
    of ``governance.retention`` and writing one audit record. With no period set it removes nothing."""

    cron: str = Field("30 3 * * *", description="When it runs (cron, in `schedules.timezone`); default daily 03:30.")
    starting_deadline: str = Field(
        "1h", description="A run that could not start this long after its time is skipped (startingDeadlineSeconds)."
    )
    active_deadline: str = Field(
        "1h", description="A run (retries included) still going after this long is stopped (activeDeadlineSeconds)."
    )


class SchedulesConfig(Section):
    """Argo CronWorkflows built with Hera (``kfloop schedules render``): the drift check, incremental feature
    materialization and the periodic report, in ``cluster.namespace`` and the project image ``cluster.image``. The
    config file comes from a ConfigMap mounted read-only; secrets come from Kubernetes Secrets as the pipeline steps
    get them."""

    timezone: str = Field("UTC", description="IANA time zone the cron expressions are read in.")
    config_map: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="ConfigMap holding this config under the key `kfloop.yaml`, mounted read-only at "
        "/etc/kfloop; null: `<project>-config`.",
    )
    service_account: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="ServiceAccount the scheduled workflows run as (it needs Argo's executor permissions); "
        "null: `<project>-workflows`.",
    )
    successful_history: int = Field(3, ge=0, description="Finished successful runs Argo keeps per schedule.")
    failed_history: int = Field(5, ge=0, description="Finished failed runs (drift verdicts too) Argo keeps.")
    retry: ScheduleRetry = Field(ScheduleRetry(), description="Retries of a failed run, with backoff.")
    drift_check: DriftCheckSchedule = Field(DriftCheckSchedule(), description="The drift check's schedule.")
    materialize: MaterializeSchedule = Field(
        MaterializeSchedule(), description="Incremental feature materialization's schedule."
    )
    report: ReportSchedule = Field(ReportSchedule(), description="The periodic report's schedule (`kfloop report`).")
    retention: RetentionSchedule = Field(
        RetentionSchedule(), description="The retention job's schedule (`kfloop retention apply`)."
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from kfloop.timezones import check_zone

        return check_zone(value)
