"""The indicators from a real Prometheus (Debian's prometheus 2.x): known series over a 7-day window are
backfilled as TSDB blocks (``promtool tsdb create-blocks-from openmetrics``) and a server queried over HTTP
answers ``kfloop slo status``'s PromQL; an indicator Prometheus has no series of falls back to the workspace.

Needs /usr/bin/prometheus and /usr/bin/promtool (``make system-test``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.errors import PrometheusError
from kfloop.slo.runs import end_run, start_run
from kfloop.slo.status import slo_status
from kfloop.storage import LocalStorage
from tests.conftest import DEMO_CONFIG, free_port, wait_ready
from tests.slo.conftest import NOW, slo_config

PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS.exists() and PROMTOOL.exists()),
    reason="needs Debian's prometheus package (/usr/bin/prometheus, promtool): make system-test",
)

WINDOW = timedelta(days=7)
STEP = timedelta(minutes=5)  # counters: one sample every 5 minutes, increasing at a constant rate
#: Requests per 5 minutes by status (400: a client's mistake, not a server error).
PER_STEP = {"200": 993, "400": 4, "500": 3, "INTERNAL": 2}
#: Requests per 5 minutes at or below each bucket bound (+Inf: all of them).
BUCKETS = {"0.25": 900, "0.5": 990, "1.0": 1000, "+Inf": sum(PER_STEP.values())}
STALE_FROM, STALE_MINUTES = NOW - timedelta(days=2), 30  # view customer_activity older than 15m for 30 minutes
FAILED_RUN_AT = NOW - timedelta(days=3, hours=1)
RUN_EVERY = timedelta(hours=6)


def _ts(t: datetime) -> str:
    return f"{t.timestamp():.0f}"


def _openmetrics() -> str:
    """The series, from an hour before the window to its end (OpenMetrics, as promtool backfills it)."""
    first = NOW - WINDOW - timedelta(hours=1)
    steps = [first + i * STEP for i in range(int((NOW - first) / STEP) + 1)]
    model, project = 'model="fraud-detector"', 'project="fraud-demo"'
    lines = ["# TYPE kfloop_requests counter"]
    for status, n in PER_STEP.items():
        proto = "grpc" if status == "INTERNAL" else "v2"
        lines += [
            f'kfloop_requests_total{{{model},protocol="{proto}",status="{status}"}} {10_000 + i * n} {_ts(t)}'
            for i, t in enumerate(steps)
        ]
    lines.append("# TYPE kfloop_request_seconds histogram")
    for i, t in enumerate(steps):
        lines += [
            f'kfloop_request_seconds_bucket{{{model},protocol="v2",le="{le}"}} {10_000 + i * n} {_ts(t)}'
            for le, n in BUCKETS.items()
        ]
        lines.append(f'kfloop_request_seconds_count{{{model},protocol="v2"}} {10_000 + i * BUCKETS["+Inf"]} {_ts(t)}')
        lines.append(f'kfloop_request_seconds_sum{{{model},protocol="v2"}} {i * 100.0} {_ts(t)}')
    lines.append("# TYPE kfloop_pipeline_runs counter")
    for outcome in ("succeeded", "failed"):
        for t in steps:
            runs = int((t - first) / RUN_EVERY) if outcome == "succeeded" else int(t >= FAILED_RUN_AT)
            lines.append(f'kfloop_pipeline_runs_total{{{model},outcome="{outcome}"}} {100 + runs} {_ts(t)}')
    lines.append("# TYPE kfloop_feature_online_age_seconds gauge")
    minutes = int((NOW - first) / timedelta(minutes=1)) + 1
    for view in ("customer_activity", "merchant_risk"):
        for i in range(minutes):
            t = first + timedelta(minutes=i)
            stale = view == "customer_activity" and STALE_FROM <= t < STALE_FROM + timedelta(minutes=STALE_MINUTES)
            age = 2000.0 if stale else 40.0
            lines.append(f'kfloop_feature_online_age_seconds{{{project},view="{view}"}} {age} {_ts(t)}')
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus holding the series of :func:`_openmetrics` (no scrapes), its base URL."""
    root = tmp_path_factory.mktemp("prometheus")
    (root / "series.om").write_text(_openmetrics())
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", root / "series.om", root / "data"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (root / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            "--storage.tsdb.retention.time=100y",  # the blocks are of a fixed past week
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_indicator_from_prometheus(prometheus: str, tmp_path: Path) -> None:
    config = slo_config(tmp_path / "ws", window="7d")
    got = {s.name: s for s in slo_status(config, LocalStorage(tmp_path / "ws"), now=NOW, prometheus_url=prometheus)}
    assert {s.source for s in got.values()} == {"prometheus"}
    per_window = WINDOW / STEP  # increase() over a constant rate is the rate times the window

    served = got["serving_availability"]
    total = sum(PER_STEP.values())
    assert served.total == pytest.approx(total * per_window)
    assert served.sli == pytest.approx(1 - (PER_STEP["500"] + PER_STEP["INTERNAL"]) / total)  # 400 is no error
    assert served.budget_remaining == pytest.approx(1 - (5 / total) / 0.005)

    latency = got["serving_latency"]
    assert latency.good == pytest.approx(BUCKETS["0.5"] * per_window)
    assert latency.sli == pytest.approx(BUCKETS["0.5"] / total)
    assert latency.budget_remaining == pytest.approx(1 - (1 - BUCKETS["0.5"] / total) / 0.01)
    assert latency.budget_remaining < 0 and latency.exhausted

    runs = got["pipeline_success"]
    assert runs.total == pytest.approx(WINDOW / RUN_EVERY + 1, rel=0.01)  # 28 successes and the failure
    assert runs.total - runs.good == pytest.approx(1, rel=0.01)

    fresh = got["feature_freshness"]
    assert fresh.total - fresh.good == STALE_MINUTES  # one view-minute per stale minute
    minutes = WINDOW / timedelta(minutes=1)
    assert fresh.total in (2 * minutes, 2 * (minutes + 1))  # 1m steps over the window (2.x counts both ends)
    assert "view-minutes older than features.freshness_sla (15m)" in fresh.detail


def test_no_series_falls_back_to_the_workspace(prometheus: str, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws", model="other-model", project="other-project", window="7d")
    end_run(storage, start_run(storage, "other-model", "r1", NOW - timedelta(days=1)), now=NOW - timedelta(days=1))
    got = {s.name: s for s in slo_status(config, storage, now=NOW, prometheus_url=prometheus)}
    assert (got["pipeline_success"].source, got["pipeline_success"].sli) == ("workspace", 1.0)
    served = got["serving_availability"]
    assert (served.source, served.sli, served.budget_remaining) == ("prometheus", None, None)
    assert 'no kfloop_requests_total series of model="other-model"' in served.detail
    assert "workspace: no request of model 'other-model' recorded" in served.detail  # nor has the workspace
    assert (
        got["feature_freshness"].sli is None and "kfloop_feature_online_age_seconds" in got["feature_freshness"].detail
    )


def test_a_latency_threshold_without_its_bucket_is_an_error(prometheus: str, tmp_path: Path) -> None:
    config = slo_config(tmp_path / "ws", window="7d", serving_latency={"objective": 0.99, "threshold_seconds": 0.1})
    with pytest.raises(PrometheusError, match=r'le="0.1".*missing the bucket 0.1'):
        slo_status(config, LocalStorage(tmp_path / "ws"), now=NOW, prometheus_url=prometheus)


def test_the_cli_reads_prometheus_and_an_unreachable_one_is_a_clear_error(prometheus: str, tmp_path: Path) -> None:
    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(f"extends: {DEMO_CONFIG}\nstorage: {{type: local, root: {tmp_path / 'ws'}}}\n")
    dead = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["slo", "status", "-c", str(cfg), "--prometheus", dead])
    assert result.exit_code == 1 and f"cannot reach Prometheus at {dead}" in result.output
    result = CliRunner().invoke(
        app, ["slo", "status", "-c", str(cfg), "--json"], env={"KFLOOP_PROMETHEUS_URL": prometheus}
    )
    assert result.exit_code == 0, result.output
    assert '"source": "prometheus"' in result.output  # the clock is now: the backfilled week is long past
