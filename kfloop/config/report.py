"""The ``report`` section: the periodic report of one model (``kfloop report``): what period it covers, whether it is
also printed to PDF, and whether it is sent to the alert webhooks. Its CronWorkflow's timing is
``schedules.report``."""

from __future__ import annotations

from pydantic import Field, field_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration


class ReportConfig(Section):
    """The periodic HTML report of a model (``reports/<model>/periodic/<id>.html``, with its data as JSON beside
    it): data volume and quality per run, feature freshness, model metrics per version, drift episodes and
    retrains, SLO budgets, each with inline SVG plots (one self-contained page: no scripts, no fetches)."""

    period: str = Field(
        "7d",
        description="How far back a report looks from the moment it is made (a duration: 24h, 7d, 30d); "
        "`kfloop report --period` overrides it. Keep it at least the schedule's interval, or runs fall between "
        "two reports.",
    )
    pdf: bool = Field(
        False,
        description="Also print the page to PDF (`<id>.pdf`) with headless Chromium (Debian package `chromium`; "
        "the project image has none, so a scheduled PDF needs an image with it); `--pdf/--no-pdf` overrides.",
    )
    send: bool = Field(
        True,
        description="Send a summary and where the report is to each of `alerts.webhooks` whose events include "
        "`report` (retries, timeout and failure records as for every notification); `--send/--no-send` "
        "overrides. Deliveries count in kfloop_report_delivery_total{model,outcome}.",
    )
    versions: int = Field(12, ge=1, le=200, description="The newest model versions the report's table and plot show.")

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError(f"{value!r}: a report period must be longer than zero")
        return value
