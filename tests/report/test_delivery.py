"""Sending a report through the alert webhook: a receiver that takes it gets the Slack-compatible summary with where
the report is, and it counts as delivered; a failing endpoint is retried, recorded with the other undelivered
notifications and counts as failed; a webhook that does not list the report event gets nothing. The counts are the
Prometheus text the workspace keeps (``monitoring/<model>/report.prom``), read back with prometheus_client's parser
and checked by promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import config_to_json
from kfloop.monitoring.event_metrics import REPORT_DELIVERY, REPORT_DELIVERY_TIMESTAMP, report_metrics_key
from kfloop.report.publish import make_report
from kfloop.storage import LocalStorage
from tests.monitoring.webhook_receiver import receiver
from tests.report.conftest import Filled
from tests.report.workspace import HOOK_ENV, fill, report_config

MODEL = "fraud-detector"


def _totals(storage: LocalStorage) -> tuple[float, float]:
    """The delivered and failed counts of the workspace's report metrics."""
    counts = _metrics(storage)
    return counts[(f"{REPORT_DELIVERY}_total", "delivered")], counts[(f"{REPORT_DELIVERY}_total", "failed")]


def _metrics(storage: LocalStorage) -> dict[tuple[str, str], float]:
    """(sample name, outcome) → value of the workspace's report metrics."""
    text = storage.read_text(report_metrics_key(MODEL))
    return {
        (s.name, s.labels.get("outcome", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == MODEL
    }


def test_a_report_is_delivered_then_a_failing_endpoint_is_counted_as_failed(tmp_path: Path) -> None:
    config, storage = fill(tmp_path)
    with receiver() as rec:
        sent = make_report(config, storage, environ={HOOK_ENV: rec.url})
        (body,) = rec.wait_for(1)
    assert [(d.delivered, d.attempts, d.status) for d in sent.deliveries or []] == [(True, 1, 200)]
    html_uri = sent.uris["html"]
    assert body["text"].startswith(":bar_chart: [fraud-demo / fraud-detector] Periodic report ")
    assert html_uri in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "section", "context"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][2]["fields"]}
    assert fields["*champion*"] == "v3 (pr_auc 0.680)" and fields["*drift episodes*"].startswith("1 ")
    assert fields["*retrains*"] == "1 started, 1 refused"
    assert html_uri in body["blocks"][3]["text"]["text"] and sent.uris["json"] in body["blocks"][3]["text"]["text"]
    assert _totals(storage) == (1, 0)
    assert (REPORT_DELIVERY_TIMESTAMP, "failed") not in _metrics(storage)

    with receiver([500, 503]) as rec:  # retries: 1, so both attempts fail
        failed = make_report(config, storage, environ={HOOK_ENV: rec.url})
        assert rec.attempts == 2 and rec.received == []
    assert [(d.delivered, d.attempts, d.status) for d in failed.deliveries or []] == [(False, 2, 503)]
    assert _totals(storage) == (1, 1)
    counts = _metrics(storage)
    assert counts[(REPORT_DELIVERY_TIMESTAMP, "failed")] >= counts[(REPORT_DELIVERY_TIMESTAMP, "delivered")]
    (note,) = storage.list(f"monitoring/{MODEL}/notifications/")
    recorded = json.loads(storage.read_text(note))
    assert recorded["kind"] == "report" and recorded["details"]["report"] == failed.uris["html"]
    assert recorded["deliveries"][0]["error"] == "HTTP 503"
    assert len(storage.list(f"reports/{MODEL}/periodic/deliveries/")) == 2
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed: run `make system-test` (Debian package prometheus)"
    text = storage.read_bytes(report_metrics_key(MODEL))
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert lint.returncode == 0, lint.stderr.decode() + lint.stdout.decode()


def test_an_unset_webhook_variable_is_a_failed_delivery_and_the_cli_says_so(filled: Filled, tmp_path: Path) -> None:
    result = CliRunner(env={HOOK_ENV: ""}).invoke(app, ["report", "-c", str(filled.config_path), "--send"])
    assert result.exit_code == 0, result.output  # the report is stored; the failed delivery is counted, not raised
    assert f"alerts.webhooks.0: not delivered (alerts.webhooks.0.url: environment variable {HOOK_ENV} is not set)" in (
        " ".join(result.output.split())
    )


def test_a_webhook_not_listing_the_report_event_gets_nothing(tmp_path: Path) -> None:
    data = json.loads(config_to_json(report_config(tmp_path / "ws")))
    data["alerts"]["webhooks"][0]["events"] = ["drift"]
    path = tmp_path / "kfloop.json"
    path.write_text(json.dumps(data))
    with receiver() as rec:
        result = CliRunner(env={HOOK_ENV: rec.url}).invoke(app, ["report", "-c", str(path), "--send"])
        assert result.exit_code == 0, result.output
        assert rec.attempts == 0
    assert "not sent: no webhook of alerts.webhooks lists the report event" in result.output
    storage = LocalStorage(tmp_path / "ws")
    assert not storage.list(f"reports/{MODEL}/periodic/deliveries/")
    assert _totals(storage) == (0, 0)  # nothing delivered, nothing failed; the report's own time is there
    assert _metrics(storage)[("kfloop_report_timestamp_seconds", "")] > 0
