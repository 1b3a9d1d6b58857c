"""Webhook notifications (Slack-compatible JSON): the webhook receiver gets the payload; a 5xx is retried; a dead
or refusing receiver never breaks the caller, and the undelivered notification is logged and recorded."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfloop.config import Config, LocalStorageConfig, load_config, parse_config
from kfloop.errors import ConfigError, PipelineError
from kfloop.monitoring.event_metrics import pipeline_metrics_key
from kfloop.monitoring.notify import Notification, drift_event, freshness_event, notify, slack_payload
from kfloop.monitoring.run_alerts import report_pipeline_run, run_events
from kfloop.storage import open_storage
from tests.conftest import REPO
from tests.monitoring.webhook_receiver import receiver

CONFIG = REPO / "examples" / "fraud" / "kfloop.yaml"
ENV = "KFLOOP_TEST_WEBHOOK_URL"


def _config(**alerts: object) -> Config:
    data = load_config(CONFIG).model_dump(mode="json")
    data["alerts"] = {"timeout": "2s", "retries": 2, "backoff": "0s", **alerts}
    return parse_config(data, "<test>")


def _hook(events: list[str] | None = None) -> dict:
    hook: dict = {"url": "${" + ENV + "}", "secret": None}
    return hook if events is None else {**hook, "events": events}


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def test_the_webhook_receiver_gets_the_payload() -> None:
    config = _config(webhooks=[_hook()])
    event = Notification("drift", "fraud-detector v2: 3 drifted column(s)", {"share": 0.6, "version": "v2"}, "m")
    with receiver() as rec:
        results = notify(config, event, environ={ENV: rec.url})
        got = rec.wait_for(1)
    assert [(d.delivered, d.attempts, d.status) for d in results] == [(True, 1, 200)]
    assert got == [slack_payload(config.project, event)]
    body = got[0]
    assert "Drift detected" in body["text"] and "fraud-detector v2: 3 drifted column(s)" in body["text"]
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    fields = body["blocks"][2]["fields"]
    assert {"type": "mrkdwn", "text": "*share*\n0.6"} in fields
    assert rec.paths == ["/hook"]


def test_a_5xx_is_retried_until_it_is_taken() -> None:
    config = _config(webhooks=[_hook()])
    with receiver(statuses=[500, 503]) as rec:
        [d] = notify(config, Notification("pipeline_failed", "step train failed"), environ={ENV: rec.url})
        assert rec.wait_for(1)[0]["text"].endswith("step train failed")
        assert rec.attempts == 3
    assert (d.delivered, d.attempts, d.status) == (True, 3, 200)


def test_a_4xx_is_final_and_retries_run_out(tmp_path: Path) -> None:
    config = _config(webhooks=[_hook()], retries=1)
    with receiver(statuses=[404]) as rec:
        [d] = notify(config, Notification("gate_failed", "x"), environ={ENV: rec.url})
        assert rec.attempts == 1
    assert (d.delivered, d.attempts, d.status, d.error) == (False, 1, 404, "HTTP 404")
    with receiver(statuses=[500, 500, 500]) as rec:
        [d] = notify(config, Notification("gate_failed", "x"), environ={ENV: rec.url})
        assert rec.attempts == 2  # one retry
    assert (d.delivered, d.attempts, d.status) == (False, 2, 500)


def test_a_dead_receiver_does_not_break_the_caller_and_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(webhooks=[_hook()], retries=1, timeout="1s")
    storage = open_storage(LocalStorageConfig(root=str(tmp_path)))
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="kfloop.notify"):
        [d] = notify(
            config, Notification("freshness_breach", "stale", model="m"), storage=storage, environ={ENV: _dead_url()}
        )
    assert time.monotonic() - start < 5
    assert not d.delivered and d.attempts == 2 and d.status is None and "ConnectError" in d.error
    assert "not delivered" in caplog.text
    [key] = storage.list("monitoring/m/notifications/")
    record = json.loads(storage.read_text(key))
    assert record["kind"] == "freshness_breach" and record["summary"] == "stale"
    assert record["deliveries"][0]["delivered"] is False
    assert "127.0.0.1" not in json.dumps(record)  # the URL is a secret: never recorded


def test_nothing_raises_even_when_the_storage_or_the_post_fails(tmp_path: Path) -> None:
    config = _config(webhooks=[_hook()], retries=0)

    def boom(url: str, body: bytes, timeout: float) -> int:
        raise RuntimeError("unexpected")

    class BrokenStorage:
        def write_text(self, key: str, text: str) -> None:
            raise OSError("disk full")

    assert notify(config, Notification("drift", "x"), environ={ENV: "http://x"}, post=boom) == []
    [d] = notify(config, Notification("drift", "x"), storage=BrokenStorage(), environ={ENV: _dead_url()})
    assert not d.delivered


def test_only_the_webhooks_listing_the_event_get_it_and_an_unset_variable_is_reported() -> None:
    config = _config(webhooks=[_hook(["drift"]), {**_hook(["gate_failed"]), "url": "${KFLOOP_TEST_OTHER}"}])
    with receiver() as rec:
        results = notify(config, Notification("gate_failed", "g"), environ={ENV: rec.url})
        assert rec.attempts == 0
    assert [(d.webhook, d.delivered, d.attempts) for d in results] == [(1, False, 0)]
    assert "KFLOOP_TEST_OTHER is not set" in results[0].error
    assert notify(_config(), Notification("drift", "x")) == []  # no webhooks: nothing to do


def test_a_literal_webhook_url_in_the_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"secret .* \$\{VAR\}"):
        _config(webhooks=[{"url": "https://hooks.slack.com/services/T0/B0/secret"}])
    with pytest.raises(ValueError, match="notification kind"):
        Notification("something", "x")


def test_drift_and_freshness_events_name_what_drifted_or_is_stale() -> None:
    record = {
        "check_id": "c1",
        "model": "fraud-detector",
        "model_version": "v2",
        "window": {"rows": 1000},
        "drift": {
            "share": 0.5,
            "drift_share": 0.5,
            "columns": [
                {"column": "amount", "stattest": "ks", "score": 1e-9, "threshold": 0.05, "drifted": True},
                {"column": "hour", "stattest": "ks", "score": 0.4, "threshold": 0.05, "drifted": False},
            ],
        },
    }
    event = drift_event(record)
    assert event.kind == "drift" and "amount" in event.summary and "hour" not in event.summary
    assert event.details["amount"].startswith("ks 1e-09")

    @dataclass
    class Row:
        view: str
        lag_seconds: float | None
        sla_seconds: float
        stale: bool

    config = _config()
    event = freshness_event(config, [Row("card", None, 900, True), Row("merchant", 10, 900, False)])
    assert event.kind == "freshness_breach" and event.summary.endswith(": card")
    assert event.details == {"card": "never materialized, SLA 900s"}


def test_a_failed_run_or_gate_is_notified_and_exported(tmp_path: Path) -> None:
    gates, [event] = run_events("m", PipelineError("data contract gate failed; training did not run:\n  a: b"), None)
    assert gates == {"contract"} and event.kind == "gate_failed" and event.details["gate"] == "contract"
    gates, [event] = run_events("m", PipelineError("step 'train' failed: boom"), None)
    assert gates == set() and event.kind == "pipeline_failed"
    rejected = {"version": "v3", "promoted": False, "reasons": ["roc_auc 0.7 is worse"], "champion_before": "v2"}
    gates, [event] = run_events("m", None, rejected)
    assert gates == {"promotion"} and "v3 was not promoted (champion stays v2)" in event.summary
    assert run_events("m", None, {**rejected, "promoted": True}) == (set(), [])

    config = _config(webhooks=[_hook()])
    storage = open_storage(LocalStorageConfig(root=str(tmp_path)))
    with receiver() as rec, pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, rec.url)
        report_pipeline_run(config, storage, decision=rejected)
        assert "Gate failed" in rec.wait_for(1)[0]["text"]
    text = storage.read_text(pipeline_metrics_key(config.training.model_name))
    assert 'kfloop_gate_failed{gate="promotion",model="fraud-detector"} 1.0' in text
    assert 'kfloop_pipeline_run_failed{model="fraud-detector"} 0.0' in text


def test_features_status_check_notifies_a_freshness_breach_and_writes_its_metrics(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app

    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(
        f"extends: {CONFIG}\nstorage: {{type: local, root: {tmp_path / 'ws'}}}\n"
        f'alerts: {{webhooks: [{{url: "${{{ENV}}}", secret: null, events: [freshness_breach]}}], backoff: 0s}}\n'
    )
    prom = tmp_path / "textfile" / "features.prom"
    with receiver() as rec:
        result = CliRunner().invoke(
            app, ["features", "status", "-c", str(cfg), "--check", "--metrics", str(prom)], env={ENV: rec.url}
        )
        got = rec.wait_for(1)
    assert result.exit_code == 1, result.output  # nothing materialized yet: every view is stale
    assert "Feature freshness breached" in got[0]["text"] and "customer_activity" in got[0]["text"]
    assert 'kfloop_feature_stale{project="fraud-demo",view="customer_activity"} 1.0' in prom.read_text()


def _cli_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(
        f"extends: {CONFIG}\nstorage: {{type: local, root: {tmp_path / 'ws'}}}\n"
        f'alerts: {{webhooks: [{{url: "${{{ENV}}}", secret: null}}], backoff: 0s}}\n'
    )
    return cfg


def test_kfloop_run_notifies_a_failed_gate_and_exports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app
    from kfloop.pipelines import local

    def failing(*args: object, **kwargs: object) -> None:
        raise PipelineError("data contract gate failed; training did not run:\n  table.min_rows: at least 10,000")

    monkeypatch.setattr(local, "run_local", failing)
    monkeypatch.chdir(tmp_path)
    with receiver() as rec:
        result = CliRunner().invoke(app, ["run", "-c", str(_cli_config(tmp_path))], env={ENV: rec.url})
        got = rec.wait_for(1)
    assert result.exit_code != 0
    assert got and "Gate failed" in got[0]["text"] and "data contract gate failed" in got[0]["text"]
    prom = (tmp_path / "ws" / pipeline_metrics_key("fraud-detector")).read_text()
    assert 'kfloop_gate_failed{gate="contract",model="fraud-detector"} 1.0' in prom
    assert 'kfloop_pipeline_run_failed{model="fraud-detector"} 1.0' in prom


def test_kfloop_monitor_check_notifies_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app
    from kfloop.monitoring import monitor

    record = {
        "check_id": "20260401T000000Z-abc123",
        "model": "fraud-detector",
        "model_version": "v2",
        "verdict": "drift",
        "window": {"rows": 800, "first": None, "last": None},
        "drift": {
            "share": 1.0,
            "drift_share": 0.5,
            "columns": [
                {
                    "column": "amount",
                    "stattest": "ks",
                    "score": 0.0,
                    "threshold": 0.05,
                    "drifted": True,
                    "prediction": False,
                }
            ],
        },
        "data_quality": {"score": 100.0, "rows": 800, "checks": []},
    }
    monkeypatch.setattr(monitor, "run_check", lambda config, storage: record)
    with receiver() as rec:
        result = CliRunner().invoke(
            app, ["monitor", "check", "-c", str(_cli_config(tmp_path)), "--no-retrain"], env={ENV: rec.url}
        )
        got = rec.wait_for(1)
    assert result.exit_code == 3, result.output
    assert got and "Drift detected" in got[0]["text"] and "amount" in got[0]["text"]
