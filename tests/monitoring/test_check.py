"""`kfloop monitor check` on a real served-and-logged window: a trained champion behind a real `kfloop serve`,
traffic replayed through it, the inference log read back. Too few rows are insufficient_data (exit 0), traffic
like the training data is no_drift (exit 0), shifted traffic is drift (exit 3); each check leaves its verdict
record and Prometheus metrics under monitoring/<model>/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.cli.monitor_cmd import DRIFT_EXIT_CODE
from kfloop.layout import drift_check_key, latest_key, latest_metrics_key, monitoring_prefix
from kfloop.serving.client import ServingClient
from kfloop.serving.clock import AS_OF_ENV
from kfloop.serving.inference_log import read_inference_log
from tests.serving.conftest import DEMO_END, Server, Trained, relaxed, served_champion

pytestmark = pytest.mark.slow

runner = CliRunner()
WINDOW, MIN_ROWS = 1000, 600


def monitored(data: dict) -> None:
    """The request's own columns and the prediction are tested. The stored features are left out: this replay
    sends old transactions against an online store as of the data's end, so their served values are not their
    point-in-time training values (on real traffic they are), and they would drift by construction."""
    relaxed(data)
    data["serving"]["unknown_category"] = "flag"  # a value outside the contract is served, and the check reports it
    data["monitoring"] = {
        "window": {"rows": WINDOW},
        "min_rows": MIN_ROWS,
        "features": data["features"]["request_features"],
        "drift_share": 0.3,  # 2 of the 6 tested columns
    }


@dataclass
class Served:
    trained: Trained
    server: Server
    client: ServingClient
    config_path: Path
    sent: int = 0

    def send(self, rows: list[dict]) -> None:
        """Score ``rows`` (100 a request) and wait until the log has every row sent so far."""
        for i in range(0, len(rows), 100):
            self.client.predict(rows[i : i + 100], "v2")
        self.sent += len(rows)
        deadline = time.monotonic() + 30
        while read_inference_log(self.trained.loop.storage, self.trained.config).num_rows < self.sent:
            assert time.monotonic() < deadline, "the inference log did not get every row within 30 s"
            time.sleep(0.2)

    def check(self, *args: str) -> tuple[int, dict]:
        result = runner.invoke(app, ["monitor", "check", "-c", str(self.config_path), "--json", *args])
        assert result.exit_code in (0, DRIFT_EXIT_CODE), result.output
        return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("monitor")
    trained = served_champion(root, monitored, rows=6000, seed=13, run="monitor-tests")
    path = trained.write_config(root / "kfloop.json")
    server = Server(path, env={AS_OF_ENV: DEMO_END.isoformat()}).start()
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    try:
        yield Served(trained, server, client, path)
    finally:
        client.close()
        server.stop()


def _stored(served: Served, record: dict) -> None:
    """The verdict record and metrics are in the workspace, under the check id and as the latest."""
    storage, model = served.trained.loop.storage, record["model"]
    assert json.loads(storage.read_text(drift_check_key(model, record["check_id"], "json"))) == record
    assert json.loads(storage.read_text(latest_key(monitoring_prefix(model)))) == record
    text = storage.read_bytes(drift_check_key(model, record["check_id"], "prom")).decode()
    assert storage.read_bytes(latest_metrics_key(model)).decode() == text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    base = (("model", model), ("version", record["model_version"]))
    for verdict in ("drift", "no_drift", "insufficient_data"):
        key = ("kfloop_drift_verdict", tuple(sorted((*base, ("verdict", verdict)))))
        assert samples[key] == (1.0 if record["verdict"] == verdict else 0.0)
    assert samples[("kfloop_drift_window_rows", base)] == record["window"]["rows"]
    for col in record["drift"]["columns"]:
        labels = tuple(sorted((*base, ("column", col["column"]))))
        assert samples[("kfloop_drift_detected", labels)] == float(col["drifted"])
        scored = tuple(sorted((*base, ("column", col["column"]), ("stattest", col["stattest"]))))
        assert samples[("kfloop_drift_score", scored)] == pytest.approx(col["score"])
    if record["drift"]["share"] is not None:
        assert samples[("kfloop_drift_share", base)] == pytest.approx(record["drift"]["share"])


def test_too_few_rows_are_insufficient_data_never_drift(served: Served) -> None:
    served.send(served.trained.request_rows(MIN_ROWS - 100, start=0))
    code, record = served.check()
    assert code == 0 and record["verdict"] == "insufficient_data"
    assert record["window"]["rows"] == MIN_ROWS - 100 and record["model_version"] == served.trained.champion
    assert record["drift"]["columns"] == [] and "min_rows" in record["drift"]["reason"]
    _stored(served, record)


def test_traffic_like_the_training_data_is_no_drift(served: Served) -> None:
    served.send(served.trained.request_rows(WINDOW, start=MIN_ROWS))
    code, record = served.check()
    assert record["window"]["rows"] == WINDOW
    assert code == 0 and record["verdict"] == "no_drift", [c for c in record["drift"]["columns"] if c["drifted"]]
    assert record["drift"]["share"] < record["drift"]["drift_share"]
    assert record["data_quality"]["failed_checks"] == [] and record["data_quality"]["score"] == 100.0
    _stored(served, record)


def test_shifted_traffic_is_drift_with_the_drifted_features_and_exit_3(served: Served) -> None:
    rows = served.trained.request_rows(WINDOW, start=MIN_ROWS + WINDOW)
    for row in rows:
        row["amount"] = None if row["amount"] is None else row["amount"] * 3
        row["distance_from_home_km"] = (
            None if row["distance_from_home_km"] is None else row["distance_from_home_km"] * 3
        )
    for row in rows[:5]:
        row["channel"] = "telepathy"  # not an allowed value: scored and flagged (unknown_category: flag), reported
    served.send(rows)
    code, record = served.check()
    assert code == DRIFT_EXIT_CODE and record["verdict"] == "drift"
    quality = record["data_quality"]
    assert quality["failed_checks"] == ["channel.allowed"] and quality["score"] < 100.0
    failed = next(c for c in quality["checks"] if c["check"] == "channel.allowed")
    assert failed["failed"] == 5 and [e["channel"] for e in failed["examples"]] == ["telepathy"] * 5
    drifted = {c["column"]: c for c in record["drift"]["drifted"]}
    assert {"amount", "distance_from_home_km"} <= set(drifted)
    assert all(c["stattest"] and c["score"] is not None for c in drifted.values())
    assert record["drift"]["share"] >= record["drift"]["drift_share"]
    _stored(served, record)

    table = runner.invoke(app, ["monitor", "check", "-c", str(served.config_path)])  # the summary for people
    assert table.exit_code == DRIFT_EXIT_CODE and "drift" in table.stdout and "channel.allowed" in table.stdout
    assert "amount" in table.stdout and "latest" not in table.stdout  # names the check's own record
