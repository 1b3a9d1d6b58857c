"""Report stage: the periodic report of the config's model, as the report pipeline's step runs it (see
:mod:`kfloop.report`). The step stores the report in the workspace like ``kfloop report`` does, and hands the page
and its data to the KFP wrapper, which publishes the page as an HTML artifact of the run (the Kubeflow UI shows it)."""

from __future__ import annotations

from pathlib import Path

from kfloop.lineage.run import emits
from kfloop.report.collect import record_json
from kfloop.report.publish import ReportResult, make_report


def run_report_step(config_json: str, period: str, send: bool, html_path: str, json_path: str) -> ReportResult:
    """Entrypoint inside the pipeline step: the report over ``period`` ("" = ``report.period``), stored, sent when
    ``send``, and written to the step's artifact paths."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    result = emits("report")(make_report)(config, storage, period=period or None, send=send)
    Path(html_path).write_text(result.html, encoding="utf-8")
    Path(json_path).write_text(record_json(result.record), encoding="utf-8")
    return result
