"""The drift check's parts without a server: the monitoring config, the pure verdict, and the window read from a
real inference log (date partitions, champion rows only, newest first by count or by age)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import Config, config_to_json, parse_config
from kfloop.errors import ConfigError
from kfloop.monitoring.check import DRIFT, INSUFFICIENT_DATA, NO_DRIFT, drift_verdict
from kfloop.monitoring.profile import build_profile
from kfloop.monitoring.window import read_window
from kfloop.serving.inference_log import InferenceLog
from kfloop.storage import LocalStorage
from tests.conftest import demo_config


def config_with(tmp_path: Path | None = None, **monitoring: object) -> Config:
    data = demo_config(tmp_path).model_dump(mode="json")
    data["monitoring"] = monitoring
    return parse_config(data, "test config")


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"columns": {"amout": {"stattest": "ks"}}}, "monitoring.columns: not a model input .*amout"),
        ({"features": ["amount", "nope"]}, "monitoring.features: not a model input .*nope"),
        ({"numeric": {"stattest": "chisquare"}}, "numeric.stattest: chisquare does not test numeric columns"),
        ({"categorical": {"stattest": "ks"}}, "categorical.stattest: ks does not test categorical columns"),
        ({"window": {"rows": None}}, "set rows, duration or both"),
        ({"window": {"duration": "soon"}}, "not a duration"),
        ({"window": {"rows": 100}, "min_rows": 500}, r"window.rows \(100\) is below min_rows \(500\)"),
        ({"stattest": "ks"}, "unknown key"),
        ({"columns": {"amount": {"stattest": "psi"}}}, "stattest"),
    ],
)
def test_a_bad_monitoring_section_fails_at_load_naming_the_key(monitoring: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(**monitoring)


def test_a_column_test_comes_from_its_own_settings_then_its_kind_then_evidently() -> None:
    m = config_with(
        numeric={"stattest": "ks", "threshold": 0.01},
        categorical={"threshold": 0.2},
        columns={"amount": {"stattest": "wasserstein"}, "channel": {"stattest": "chisquare", "threshold": 0.1}},
        prediction={"stattest": "jensenshannon"},
    ).monitoring
    assert m.drift_test("amount", "numeric") == ("wasserstein", 0.01)
    assert m.drift_test("hour_of_day", "numeric") == ("ks", 0.01)
    assert m.drift_test("channel", "categorical") == ("chisquare", 0.1)
    assert m.drift_test("merchant_category", "categorical") == (None, 0.2)  # Evidently's choice, own threshold
    assert m.drift_test("score", "numeric", prediction=True) == ("jensenshannon", 0.01)
    assert config_with().monitoring.drift_test("amount", "numeric") == (None, None)


def _frames(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 1, n),
            "hour_of_day": rng.integers(0, 24, n).astype(np.float64),
            "score": rng.beta(1 + shift * 4, 8, n),
            "channel": rng.choice(["pos", "online", "atm"], n, p=[0.6, 0.3, 0.1]).astype(object),
        }
    )


PROFILE = build_profile(_frames(5000, 0.0, 1), ["amount", "hour_of_day", "score"], ["channel"])


def test_the_verdict_follows_evidentlys_dataset_rule_and_the_minimum_sample_guard() -> None:
    m = config_with(min_rows=200, window={"rows": 1000}).monitoring
    same = drift_verdict(m, PROFILE, _frames(1000, 0.0, 2), "score")
    assert same["verdict"] == NO_DRIFT and same["share"] == 0.0 and same["drifted"] == []
    assert [c["column"] for c in same["columns"]] == ["amount", "hour_of_day", "score", "channel"]
    assert same["prediction"]["column"] == "score" and same["prediction"]["prediction"] is True

    shifted = drift_verdict(m, PROFILE, _frames(1000, 1.0, 3), "score")
    assert shifted["verdict"] == DRIFT and shifted["share"] == 0.5  # amount and the prediction: 2 of 4
    assert [c["column"] for c in shifted["drifted"]] == ["amount"]  # features; the prediction is reported apart
    assert shifted["prediction"]["drifted"] and shifted["drifted"][0]["stattest"] == "wasserstein"

    strict = config_with(min_rows=200, window={"rows": 1000}, drift_share=0.75).monitoring
    assert drift_verdict(strict, PROFILE, _frames(1000, 1.0, 3), "score")["verdict"] == NO_DRIFT

    few = drift_verdict(m, PROFILE, _frames(199, 1.0, 3), "score")
    assert few["verdict"] == INSUFFICIENT_DATA and few["columns"] == [] and "199 rows" in few["reason"]


def test_only_the_chosen_features_and_the_prediction_are_tested_and_empty_columns_are_untested() -> None:
    m = config_with(min_rows=200, window={"rows": 1000}, features=["amount", "channel"]).monitoring
    window = _frames(1000, 0.0, 4)
    window["channel"] = None
    out = drift_verdict(m, PROFILE, window, "score")
    assert [c["column"] for c in out["columns"]] == ["amount", "score"] and out["untested"] == ["channel"]


def test_a_configured_test_that_does_not_fit_the_column_is_a_config_error() -> None:
    m = config_with(min_rows=200, window={"rows": 1000}, columns={"channel": {"stattest": "ks"}}).monitoring
    with pytest.raises(ConfigError, match=r"monitoring\.columns\.channel: stattest 'ks' cannot test 'channel'"):
        drift_verdict(m, PROFILE, _frames(1000, 0.0, 5), "score")


def _log(storage: LocalStorage, config: Config, at: datetime, version: str, n: int, tag: str) -> None:
    log = InferenceLog(storage, config, clock=lambda: at)
    try:
        log.append(
            {
                "customer_id": [f"{tag}-{i}" for i in range(n)],
                "amount": [float(i) for i in range(n)],
                "score": [0.5] * n,
            },
            model_version=version,
            request_id=tag,
            protocol="v2",
        )
    finally:
        log.close()


def test_the_window_is_the_champions_newest_rows_by_count_or_by_age(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    now = datetime(2026, 5, 10, 12, tzinfo=UTC)
    by_rows = config_with(tmp_path, window={"rows": 25}, min_rows=10)
    _log(storage, by_rows, now - timedelta(days=3), "v1", 30, "old")
    _log(storage, by_rows, now - timedelta(days=2), "v2", 10, "two-days")
    _log(storage, by_rows, now - timedelta(hours=1), "v1", 5, "other-version")
    _log(storage, by_rows, now - timedelta(minutes=30), "v2", 20, "recent")
    _log(storage, by_rows, now + timedelta(minutes=1), "v2", 7, "future")

    window = read_window(storage, by_rows, "v2", now)
    assert window.rows == 25 and set(window.table.column("model_version").to_pylist()) == {"v2"}
    ids = window.table.column("request_id").to_pylist()
    assert ids == ["two-days"] * 5 + ["recent"] * 20  # newest first, back into an older date partition
    assert window.first == now - timedelta(days=2) and window.last == now - timedelta(minutes=30)
    assert window.bounds()["until"] == now.isoformat() and window.bounds()["since"] is None

    by_age = config_with(tmp_path, window={"rows": None, "duration": "1d"}, min_rows=10)
    assert read_window(storage, by_age, "v2", now).table.column("request_id").to_pylist() == ["recent"] * 20
    assert read_window(storage, by_age, "v1", now).rows == 5
    assert read_window(storage, by_age, "v3", now).rows == 0


def test_without_a_champion_the_check_is_an_error_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(config_with(tmp_path / "ws")))
    result = CliRunner().invoke(app, ["monitor", "check", "-c", str(path)])
    assert result.exit_code == 2 and "has no champion" in result.output
