"""The Grafana dashboard (built with grafana-foundation-sdk): the shipped file is current; every panel query is
valid PromQL (`promtool check rules`) and reads a metric kfloop exports; and with Debian's real Prometheus
scraping a real `kfloop serve` and, through the node exporter's textfile collector, a real drift check's
metrics file, the serving and drift panels' queries return data. A config with a ``stream`` section gets the
stream worker's row, and its panels show a real worker's push lag, online age and records.

Grafana itself is not packaged for Debian and cannot be installed here: the panels' queries are evaluated by
the Prometheus the dashboard reads, which is what a panel shows.

``KFLOOP_REGENERATE=1 pytest tests/serving/test_grafana_dashboard.py`` rewrites the shipped file (as
``make compile``)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kfloop.config import Config, load_config, parse_config
from kfloop.layout import monitoring_prefix
from kfloop.monitoring import metric_names as names
from kfloop.monitoring.grafana import HEADER_KEY, build_dashboard, queries, render_dashboard
from kfloop.monitoring.monitor import run_check
from kfloop.serving.client import ServingClient
from kfloop.serving.local_server import free_port
from kfloop.storage.local import LocalStorage
from kfloop.stream.sources import send_events
from kfloop.stream.worker import open_worker, serve_metrics
from tests.conftest import REPO
from tests.feature_repo.conftest import redis_server  # noqa: F401  (fixture)
from tests.feature_repo.harness import feature_config, sqlite_backend
from tests.serving.conftest import Server, Trained
from tests.stream.conftest import demo_event, stream_edit

pytestmark = pytest.mark.slow

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
SHIPPED = REPO / "helm" / "kfloop" / "dashboards" / "kfloop.json"
PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
needs_prometheus = pytest.mark.skipif(
    not (PROMETHEUS.exists() and PROMTOOL.exists() and NODE_EXPORTER.exists()),
    reason="needs Debian's prometheus and prometheus-node-exporter packages: make system-test",
)
#: Grafana's range variable, as a query over a 1 s scrape would get it.
RATE_INTERVAL = "30s"
STREAM_ROW = "Streaming features"
STREAM_PANELS = ("Push lag p50 / p99 by view", "Age of the newest online value", "Stream records by outcome")


def _with_stream(config: Config) -> Config:
    """``config`` with a stream section of defaults (Redis Streams)."""
    return parse_config({**config.model_dump(mode="json"), "stream": {}}, "the cluster demo with a stream")


def _titles(dashboard: dict) -> list[str]:
    return [p["title"] for p in dashboard["panels"]]


def _promql(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL)


def test_the_shipped_dashboard_equals_a_fresh_render() -> None:
    config = load_config(CLUSTER_CONFIG)
    fresh = render_dashboard(config, "examples/fraud/kfloop.cluster.yaml")
    if os.environ.get("KFLOOP_REGENERATE") == "1":
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        SHIPPED.write_text(fresh)
    assert SHIPPED.read_text() == fresh, f"{SHIPPED} is stale: `make compile` or KFLOOP_REGENERATE=1 rewrites it"
    body = json.loads(fresh)
    assert HEADER_KEY in body and body["uid"] == "kfloop-fraud-demo"
    assert [v["type"] for v in body["templating"]["list"]] == ["datasource"]
    titles = [p["title"] for p in body["panels"]]
    assert titles[0] == "Serving" and {"Drift share", "Request latency p50 / p99", "Feature freshness lag"} <= set(
        titles
    )
    for panel in body["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def test_the_stream_row_comes_with_a_stream_section_only() -> None:
    config = load_config(CLUSTER_CONFIG)
    assert config.stream is None and STREAM_ROW not in _titles(build_dashboard(config))
    titles = _titles(build_dashboard(_with_stream(config)))
    assert titles[titles.index(STREAM_ROW) :] == [STREAM_ROW, *STREAM_PANELS]


@pytest.mark.parametrize("stream", [False, True], ids=["demo", "demo-with-stream"])
def test_every_query_reads_a_metric_kfloop_exports_scoped_to_the_model(stream: bool) -> None:
    config = _with_stream(load_config(CLUSTER_CONFIG)) if stream else load_config(CLUSTER_CONFIG)
    exported = {getattr(names, n) for n in names.__all__}
    for expr in queries(build_dashboard(config)):
        used = set(re.findall(r"kfloop_[a-z_]+", expr))
        assert used, expr
        for metric in used:
            base = re.sub(r"_(bucket|total)$", "", metric)
            assert metric in exported or base in exported, f"{metric} in {expr}"
        assert f'model="{config.training.model_name}"' in expr or f'project="{config.project}"' in expr, expr


@needs_prometheus
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = queries(build_dashboard(_with_stream(load_config(CLUSTER_CONFIG))))  # every row
    rules = {
        "groups": [
            {"name": "panels", "rules": [{"record": f"panel:q{i}", "expr": _promql(e)} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": _promql(expr)})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@needs_prometheus
def test_serving_and_drift_panels_show_data_from_a_real_server_and_check(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path, processes: list[subprocess.Popen]
) -> None:
    config_path = trained.write_config(
        tmp_path / "kfloop.json",
        lambda d: d["monitoring"].update(min_rows=100, window={"rows": 200, "duration": None}),
    )
    server = start_server(config_path)
    config = load_config(config_path)
    client = ServingClient.for_config(config, server.url, server.grpc_target)
    for i in range(20):
        client.predict(trained.request_rows(10, start=i * 10), ("v1", "v2", "grpc")[i % 3])
    assert server.stop() is not None  # flushes the inference log
    server = start_server(config_path)  # serving again, for Prometheus to scrape
    client = ServingClient.for_config(config, server.url, server.grpc_target)
    record = run_check(config, trained.loop.storage)  # writes monitoring/<model>/latest.prom
    textfiles = trained.loop.workspace / monitoring_prefix(config.training.model_name)
    assert (textfiles / "latest.prom").exists() and record["window"]["rows"] == 200

    exporter_port, prom_port = free_port(), free_port()
    exporter_log = tmp_path / "node-exporter.log"
    processes.append(
        _start(
            [
                str(NODE_EXPORTER),
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfiles}",
                f"--web.listen-address=127.0.0.1:{exporter_port}",
            ],
            exporter_log,
        )
    )
    _wait_http(f"http://127.0.0.1:{exporter_port}/metrics", processes[-1], exporter_log)
    scrape = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "kfloop-serve", "static_configs": [{"targets": [server.url.removeprefix("http://")]}]},
            {"job_name": "kfloop-textfiles", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    prom_log = tmp_path / "prometheus.log"
    processes.append(
        _start(
            [
                str(PROMETHEUS),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            prom_log,
        )
    )
    base = f"http://127.0.0.1:{prom_port}"
    _wait_http(f"{base}/-/ready", processes[-1], prom_log)

    panels = {p["title"]: p for p in build_dashboard(config)["panels"] if p["type"] != "row"}
    must_show = [
        "Requests by protocol and status",
        "Server error ratio",
        "Request latency p50 / p99",
        "Feature lookup p99",
        "Served version",
        "Online store up",
        "Drift share",
        "Verdict",
        "Window quality and rows",
        "Since the last drift check",
    ]
    deadline = time.monotonic() + 60
    empty = must_show
    while empty and time.monotonic() < deadline:
        for i in range(3):  # traffic while Prometheus scrapes, so rates have two samples
            client.predict(trained.request_rows(5, start=i * 5), ("v1", "v2", "grpc")[i])
        time.sleep(1)
        empty = [t for t in must_show if not all(_query(base, x["expr"]) for x in panels[t]["targets"])]
    assert not empty, f"panels without data: {empty}\n{prom_log.read_text(errors='replace')[-2000:]}"
    served = _query(base, panels["Served version"]["targets"][0]["expr"])
    assert [s["metric"]["version"] for s in served] == [trained.champion]
    share = float(_query(base, panels["Drift share"]["targets"][0]["expr"])[0]["value"][1])
    assert share == pytest.approx(record["drift"]["share"])


def _panel_values(base: str, panel: dict) -> dict[str, float]:
    """Legend → value of each series a panel shows now (NaN left out: a quantile of a rate with no increase)."""
    out = {}
    for target in panel["targets"]:
        for series in _query(base, target["expr"]):
            labels = series["metric"]
            legend = re.sub(r"\{\{(\w+)\}\}", lambda m, labels=labels: labels.get(m[1], ""), target["legendFormat"])
            value = float(series["value"][1])
            if not math.isnan(value):
                out[legend] = value
    return out


@needs_prometheus
def test_stream_panels_show_a_real_workers_freshness(
    tmp_path: Path,
    redis_server,  # noqa: F811  (the fixture imported above)
    processes: list[subprocess.Popen],
) -> None:
    """A real worker on a real redis-server, fed events 2 s old while Prometheus scrapes its /metrics each
    second: every stream panel's queries return finite values for each feature view, in the range the events
    make."""
    redis_server.flush()
    config = feature_config(tmp_path / "ws", sqlite_backend(), stream_edit(redis_server))
    env = {"KFLOOP_STREAM_REDIS_URL": f"redis://{redis_server.address}/0"}
    worker = open_worker(config, LocalStorage(tmp_path / "ws"), env)
    metrics_port, prom_port = free_port(), free_port()
    serve_metrics(worker.metrics, metrics_port)
    thread = threading.Thread(target=worker.run, name="stream-worker", daemon=True)
    thread.start()
    try:
        scrape = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "kfloop-stream", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
        prom_log = tmp_path / "prometheus.log"
        processes.append(
            _start(
                [
                    str(PROMETHEUS),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                prom_log,
            )
        )
        base = f"http://127.0.0.1:{prom_port}"
        _wait_http(f"{base}/-/ready", processes[-1], prom_log)
        panels = {p["title"]: p for p in build_dashboard(config)["panels"]}
        views = {v.name for v in config.features.views}

        want = {
            STREAM_PANELS[0]: {f"p{p} {v}" for p in (50, 99) for v in views},
            STREAM_PANELS[1]: views,
            STREAM_PANELS[2]: {"applied"},
        }
        sent, found, deadline = 0, {}, time.monotonic() + 60
        while time.monotonic() < deadline:
            now = datetime.now(UTC)
            send_events(config, [demo_event(sent + i, now - timedelta(seconds=2)) for i in range(20)], env)
            sent += 20
            time.sleep(1)
            found = {title: _panel_values(base, panels[title]) for title in STREAM_PANELS}
            if all(want[t] <= set(found[t]) for t in STREAM_PANELS):
                break
        missing = {t: sorted(want[t] - set(found.get(t, {}))) for t in STREAM_PANELS}
        assert not any(missing.values()), (
            f"panels without data: {missing}\n{prom_log.read_text(errors='replace')[-2000:]}"
        )
    finally:
        worker.stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    lags, ages, records = (found[t] for t in STREAM_PANELS)
    assert all(1.0 <= lag <= 10.0 for lag in lags.values()), lags  # events 2 s old, read within a poll
    assert all(0.0 < age < 30.0 for age in ages.values()), ages
    assert records["applied"] > 0, records
