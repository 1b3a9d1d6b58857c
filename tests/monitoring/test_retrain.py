"""The retraining trigger: a drift verdict starts the training pipeline once per drift episode, even when
five checks race; the cooldown is exact under an injected clock; insufficient data never triggers; every
decision is audited; and the trigger starts a real local pipeline run (kfp.local through `kfloop run`)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.cli.monitor_cmd import DRIFT_EXIT_CODE
from kfloop.config import Config, config_to_json, parse_config
from kfloop.demo import DemoSpec, generate, write_frame
from kfloop.errors import ConfigError
from kfloop.layout import audit_kind_prefix
from kfloop.monitoring.check import DRIFT, INSUFFICIENT_DATA, NO_DRIFT, drift_verdict
from kfloop.monitoring.event_metrics import retrain_metrics_key
from kfloop.monitoring.launch import LocalLauncher, launcher_for
from kfloop.monitoring.monitor import store_check
from kfloop.monitoring.profile import build_profile
from kfloop.monitoring.retrain import FAILED, NO, RETRAIN, decide, read_audit
from kfloop.pipelines.local import project_python_on_path
from kfloop.registry import ModelRegistry
from kfloop.storage import LocalStorage, Storage
from tests.conftest import REPO, demo_config
from tests.kfp_api import FakeKfpApi, serve_kfp_api
from tests.monitoring.webhook_receiver import receiver as webhook_receiver

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN_ROWS = 500
runner = CliRunner()
COMPILED = REPO / "pipelines" / "compiled" / "training.yaml"


class FakeLauncher:
    """Counts the runs it is asked to start (thread-safe); ``delay`` widens the race window."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.runs: list[str] = []
        self.delay, self.fail = delay, fail
        self._lock = threading.Lock()

    def start(self, config: Config, run_name: str) -> dict:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the pipeline API is down")
        with self._lock:
            self.runs.append(run_name)
        return {"run_id": run_name, "where": "fake"}


def retrain_config(workspace: Path, cooldown: str = "1h", **source: object) -> Config:
    data = demo_config(workspace, **source).model_dump(mode="json")
    data["monitoring"] |= {"min_rows": MIN_ROWS, "window": {"rows": 1000}}
    data["monitoring"]["retrain"] = {"enabled": True, "cooldown": cooldown}
    return parse_config(data, "retrain test config")


def champion(storage: Storage, config: Config, tmp_path: Path) -> str:
    """Register and promote a stand-in version (the decision only reads which version is champion)."""
    files = tmp_path / f"model-{secrets.token_hex(2)}"
    files.mkdir()
    (files / "weights.bin").write_bytes(b"w")
    registry = ModelRegistry(storage, config.training.model_name)
    version = registry.register(files, {"metrics": {}}).version
    registry.promote(version, "test")
    return version


def check(storage: Storage, config: Config, version: str, verdict: str, at: datetime, rows: int = 1000) -> dict:
    """A verdict record as `kfloop monitor check` stores it (its own writer), at ``at``."""
    drifted = verdict == DRIFT
    col = {"column": "amount", "stattest": "ks", "score": 1e-9 if drifted else 0.4, "threshold": 0.05}
    col |= {"drifted": drifted, "prediction": False}
    pred = {"column": "score", "stattest": "ks", "score": 0.01 if drifted else 0.6, "threshold": 0.05}
    pred |= {"drifted": drifted, "prediction": True}
    tested = verdict != INSUFFICIENT_DATA
    drift = {
        "verdict": verdict,
        "drift_share": 0.5,
        "min_rows": MIN_ROWS,
        "share": (1.0 if drifted else 0.0) if tested else None,
        "columns": [col, pred] if tested else [],
        "drifted": [col] if drifted else [],
        "prediction": pred if tested else None,
        "untested": [],
        **({} if tested else {"reason": f"{rows} rows in the window, fewer than monitoring.min_rows"}),
    }
    return stored(storage, config, version, drift, at, rows)


def stored(storage: Storage, config: Config, version: str, drift: dict, at: datetime, rows: int) -> dict:
    """Store the pure core's verdict (:func:`drift_verdict`) as the check at ``at`` would."""
    drift = dict(drift)
    record = {
        "check_id": f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        "model": config.training.model_name,
        "model_version": version,
        "checked_at": at.isoformat(),
        "checked_at_unix": at.timestamp(),
        "verdict": drift.pop("verdict"),
        "window": {"rows": rows, "first": None, "last": None, "rows_limit": 1000, "duration": None},
        "drift": drift,
        "data_quality": {"score": 100.0, "rows": rows, "checks": []},
    }
    store_check(storage, record)
    return record


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, LocalStorage, str]:
    config = retrain_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    return config, storage, champion(storage, config, tmp_path)


def test_a_drift_episode_starts_exactly_one_run_and_a_new_episode_another(setup) -> None:
    config, storage, v1 = setup
    launcher = FakeLauncher()
    decide(config, storage, check(storage, config, v1, NO_DRIFT, T0), launcher, now=T0)
    decisions = []
    for minutes in (15, 30, 45):  # one episode: three drift checks in a row
        at = T0 + timedelta(minutes=minutes)
        decisions.append(decide(config, storage, check(storage, config, v1, DRIFT, at), launcher, now=at))
    assert [d["decision"] for d in decisions] == [RETRAIN, NO, NO]
    assert len(launcher.runs) == 1 and "already started run" in decisions[1]["reason"]
    assert len({d["episode"] for d in decisions}) == 1
    # insufficient data neither ends the episode nor triggers
    at = T0 + timedelta(hours=3)
    low = decide(config, storage, check(storage, config, v1, INSUFFICIENT_DATA, at, rows=10), launcher, now=at)
    at += timedelta(minutes=15)
    again = decide(config, storage, check(storage, config, v1, DRIFT, at), launcher, now=at)
    assert low["decision"] == NO and again["decision"] == NO and again["episode"] == decisions[0]["episode"]
    # a no_drift ends the episode: the next drift (past the cooldown) is a new episode and retrains
    at += timedelta(minutes=15)
    decide(config, storage, check(storage, config, v1, NO_DRIFT, at), launcher, now=at)
    at += timedelta(minutes=15)
    new = decide(config, storage, check(storage, config, v1, DRIFT, at), launcher, now=at)
    assert new["decision"] == RETRAIN and new["episode"] != decisions[0]["episode"] and len(launcher.runs) == 2


def _window(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 1, n),
            "hour_of_day": rng.integers(0, 24, n).astype(np.float64),
            "score": rng.beta(1 + shift * 4, 8, n),
            "channel": rng.choice(["pos", "online", "atm"], n, p=[0.6, 0.3, 0.1]).astype(object),
        }
    )


def test_real_verdicts_no_trigger_on_twenty_unshifted_windows_and_one_per_shift_episode(setup) -> None:
    """Verdicts of the real drift core on seeded windows: the same distribution never triggers; a real shift
    always does, exactly once per episode."""
    config, storage, v1 = setup
    profile = build_profile(_window(5000, 0.0, 1), ["amount", "hour_of_day", "score"], ["channel"])
    launcher = FakeLauncher()
    at = T0

    def decide_on(shift: float, seed: int) -> dict:
        nonlocal at
        at += timedelta(minutes=15)
        drift = drift_verdict(config.monitoring, profile, _window(1000, shift, seed), "score")
        return decide(config, storage, stored(storage, config, v1, drift, at, 1000), launcher, now=at)

    calm = [decide_on(0.0, seed) for seed in range(100, 120)]
    assert {d["verdict"] for d in calm} == {NO_DRIFT} and launcher.runs == []
    shifted = [decide_on(1.0, seed) for seed in range(200, 205)]
    assert {d["verdict"] for d in shifted} == {DRIFT}
    assert [d["decision"] for d in shifted] == [RETRAIN] + [NO] * 4 and len(launcher.runs) == 1
    assert {d["column"] for d in shifted[0]["drifted"]} >= {"amount", "score"}
    at += timedelta(hours=2)  # past the cooldown: the shift clears, then comes back (a second episode)
    decide_on(0.0, 300)
    assert [decide_on(1.0, seed)["decision"] for seed in (301, 302)] == [RETRAIN, NO] and len(launcher.runs) == 2


def test_five_racing_checks_start_exactly_one_run(setup) -> None:
    """Five overlapping `monitor check --retrain`s: each stores its drift verdict and decides at once."""
    config, storage, v1 = setup
    check(storage, config, v1, NO_DRIFT, T0)
    launcher = FakeLauncher(delay=0.3)  # a slow submission: the others arrive while it is in flight
    barrier = threading.Barrier(5)
    results: list[dict] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            at = T0 + timedelta(minutes=15, seconds=i)
            barrier.wait()
            record = check(storage, config, v1, DRIFT, at)
            results.append(decide(config, storage, record, launcher, now=at))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(launcher.runs) == 1
    assert sorted(d["decision"] for d in results) == [NO] * 4 + [RETRAIN]
    assert len({d["episode"] for d in results}) == 1
    assert len(read_audit(storage)) == 5


def test_cooldown_is_exact_under_an_injected_clock(tmp_path: Path) -> None:
    config = retrain_config(tmp_path / "ws", cooldown="2h")
    storage = LocalStorage(tmp_path / "ws")
    v1 = champion(storage, config, tmp_path)
    launcher = FakeLauncher()
    first = decide(config, storage, check(storage, config, v1, DRIFT, T0), launcher, now=T0)
    assert first["decision"] == RETRAIN
    check(storage, config, v1, NO_DRIFT, T0 + timedelta(minutes=1))  # ends the episode
    edge = T0 + timedelta(hours=2)
    early = decide(
        config, storage, check(storage, config, v1, DRIFT, edge), launcher, now=edge - timedelta(microseconds=1)
    )
    assert early["decision"] == NO and early["reason"].startswith("cooldown:") and edge.isoformat() in early["reason"]
    on_time = decide(config, storage, check(storage, config, v1, DRIFT, edge), launcher, now=edge)
    assert on_time["decision"] == RETRAIN and len(launcher.runs) == 2


def test_the_minimum_sample_guard_holds(setup) -> None:
    config, storage, v1 = setup
    launcher = FakeLauncher()
    few = decide(config, storage, check(storage, config, v1, INSUFFICIENT_DATA, T0, rows=MIN_ROWS - 1), launcher)
    assert few["decision"] == NO and "insufficient_data is never a trigger" in few["reason"]
    # a drift verdict on a window below today's min_rows (the config was raised since) does not trigger either
    thin = decide(config, storage, check(storage, config, v1, DRIFT, T0, rows=MIN_ROWS - 1), launcher)
    assert thin["decision"] == NO and f"fewer than monitoring.min_rows ({MIN_ROWS})" in thin["reason"]
    assert launcher.runs == []


def test_a_verdict_on_a_replaced_champion_is_stale(setup, tmp_path: Path) -> None:
    config, storage, v1 = setup
    old = check(storage, config, v1, DRIFT, T0)
    v2 = champion(storage, config, tmp_path)
    launcher = FakeLauncher()
    stale = decide(config, storage, old, launcher)
    assert stale["decision"] == NO and f"champion is now {v2}" in stale["reason"] and launcher.runs == []


def test_every_decision_is_audited_append_only(setup) -> None:
    config, storage, v1 = setup
    launcher = FakeLauncher()
    at = [T0 + timedelta(minutes=m) for m in range(3)]
    made = [
        decide(config, storage, check(storage, config, v1, NO_DRIFT, at[0]), launcher, now=at[0]),
        decide(config, storage, check(storage, config, v1, DRIFT, at[1]), launcher, now=at[1]),
        decide(config, storage, check(storage, config, v1, DRIFT, at[2]), launcher, now=at[2]),
    ]
    with pytest.raises(RuntimeError, match="API is down"):  # a run that could not start is audited, then raised
        check(storage, config, v1, NO_DRIFT, T0 + timedelta(minutes=3))
        decide(
            config,
            storage,
            check(storage, config, v1, DRIFT, T0 + timedelta(hours=5)),
            FakeLauncher(fail=True),
            now=T0 + timedelta(hours=5),
        )
    audit = read_audit(storage)
    assert [a["decision"] for a in audit] == [NO, RETRAIN, NO, FAILED]
    assert [a["audit_id"] for a in audit[:3]] == [m["audit_id"] for m in made]
    assert len(storage.list(audit_kind_prefix("retrain") + "/")) == 4  # one object per decision
    yes = audit[1]
    assert yes["run_id"] == launcher.runs[0] and yes["check_id"] == made[1]["check_id"]
    assert {d["column"]: d["score"] for d in yes["drifted"]} == {"amount": 1e-9, "score": 0.01}
    assert all(a["reason"] and a["check_id"] and "drifted" in a for a in audit)
    assert audit[0]["run_id"] is None and audit[0]["reason"] == "verdict no_drift: no drift"
    # the alert rules read the newest started / refused decision times from the trigger's metrics file
    from prometheus_client.parser import text_string_to_metric_families

    model = config.training.model_name
    text = storage.read_bytes(retrain_metrics_key(model)).decode()
    samples = {s.labels["decision"]: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples == {"started": at[1].timestamp(), "refused": at[2].timestamp()}


@pytest.mark.slow
def test_the_trigger_starts_a_real_local_pipeline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drift verdict on the champion starts `kfloop run` (kfp.local) on the source's current data: it
    trains a new version, and the pipeline's own gate promotes it (the stand-in champion was trained on no
    feature service, so the gate judges the candidate on its minimums)."""
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    write_frame(generate(DemoSpec(rows=3000, seed=11)).frame, tmp_path / "src.csv", "csv")
    config = retrain_config(Path("ws"), uri="src.csv")
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(config))
    storage = LocalStorage("ws")
    v1 = champion(storage, config, tmp_path)
    audit = decide(config, storage, check(storage, config, v1, DRIFT, T0), LocalLauncher(path, wait=True))
    assert audit["decision"] == RETRAIN and audit["run"]["exit_code"] == 0
    log = Path(audit["run"]["log"]).read_text()
    assert "pipeline succeeded" in log, log[-2000:]
    registry = ModelRegistry(storage, config.training.model_name)
    assert [v.version for v in registry.list()] == [v1, "v2"]
    assert registry.champion().version == "v2", json.dumps(registry.history(), indent=1)
    assert read_audit(storage)[-1]["run_id"] == audit["run_id"]


@pytest.fixture
def kfp_api(tmp_path: Path) -> Iterator[tuple[Config, FakeKfpApi]]:
    """A retrain config whose cluster.kfp_host is a running stand-in for the Kubeflow Pipelines API
    (:mod:`tests.kfp_api`: no cluster can run here), and that stand-in."""
    with serve_kfp_api() as api:
        data = retrain_config(tmp_path / "ws").model_dump(mode="json")
        data["cluster"] |= {"kfp_host": api.url, "experiment": "fraud-retrain"}
        data["monitoring"]["retrain"] |= {"run_on": "cluster", "pipeline_package": str(COMPILED)}
        yield parse_config(data, "cluster retrain config"), api


def test_on_a_cluster_the_trigger_submits_the_compiled_package_to_the_experiment(kfp_api, tmp_path: Path) -> None:
    config, api = kfp_api
    storage = LocalStorage(tmp_path / "ws")
    v1 = champion(storage, config, tmp_path)
    audit = decide(config, storage, check(storage, config, v1, DRIFT, T0), launcher_for(config, Path("unused")))
    assert audit["decision"] == RETRAIN and audit["run_id"] == "run-1"
    assert audit["run"]["experiment"] == "fraud-retrain"
    posts = api.posts()
    assert [c.path for c in posts] == ["/apis/v2beta1/experiments", "/apis/v2beta1/runs"]
    assert posts[0].body["display_name"] == "fraud-retrain"
    run = posts[1].body
    assert run["experiment_id"] == "exp-1" and run["display_name"].startswith("retrain-")
    compiled = next(yaml.safe_load_all(COMPILED.read_text()))  # the pipeline spec (then the platform spec)
    assert (
        run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"] == compiled["pipelineInfo"]
    )  # the committed package, as compiled


def test_without_a_package_the_cluster_retrain_compiles_the_config(kfp_api, tmp_path: Path) -> None:
    """In a pod there is no compiled file: the retrain compiles the pipeline from the config it runs with."""
    config, api = kfp_api
    data = config.model_dump(mode="json")
    data["monitoring"]["retrain"]["pipeline_package"] = None
    config = parse_config(data, "no package")
    run = launcher_for(config, Path("unused")).start(config, "retrain-x")
    assert run["package"] == "compiled from the config"
    (posted,) = [c.body for c in api.posts() if c.path == "/apis/v2beta1/runs"]
    spec = posted["pipeline_spec"]
    spec = spec.get("pipeline_spec", spec)  # with a platform spec, kfp nests the pipeline's one level down
    assert spec["pipelineInfo"]["name"] == f"{config.project}-training"


def test_a_cluster_retrain_needs_the_kfp_host(setup) -> None:
    config, storage, v1 = setup
    data = config.model_dump(mode="json")
    data["monitoring"]["retrain"]["run_on"] = "cluster"
    config = parse_config(data, "no host")
    with pytest.raises(ConfigError, match=r"cluster\.kfp_host"):
        decide(config, storage, check(storage, config, v1, DRIFT, T0), launcher_for(config, Path("unused")))
    assert read_audit(storage)[-1]["decision"] == FAILED


def test_monitor_check_retrain_and_monitor_retrain_decide_from_the_cli(
    kfp_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI wiring: `monitor check --retrain` decides on the verdict it just stored (the check itself is
    tested in test_check.py: here it stores a drift verdict), `monitor retrain --check ID` on a stored one."""
    config, _ = kfp_api
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(config))
    storage = LocalStorage(tmp_path / "ws")
    v1 = champion(storage, config, tmp_path)
    monkeypatch.setattr("kfloop.monitoring.monitor.run_check", lambda cfg, st: check(st, cfg, v1, DRIFT, T0))
    result = runner.invoke(app, ["monitor", "check", "-c", str(path), "--retrain", "--json"])
    assert result.exit_code == DRIFT_EXIT_CODE, result.output
    assert json.loads(result.stdout)["verdict"] == DRIFT  # stdout stays the verdict JSON; the decision is on stderr
    assert "retrain: retrain" in result.stderr and "run-1" in result.stderr
    first = read_audit(storage)[0]
    result = runner.invoke(app, ["monitor", "retrain", "-c", str(path), "--check", first["check_id"]])
    assert result.exit_code == 0 and "retrain: no" in result.output and "already started run run-1" in result.output
    result = runner.invoke(app, ["monitor", "retrain", "-c", str(path), "--check", "20260101T000000Z-000000"])
    assert result.exit_code == 2 and "no stored check" in result.output
    result = runner.invoke(app, ["monitor", "check", "-c", str(path), "--no-retrain"])
    assert result.exit_code == DRIFT_EXIT_CODE and len(read_audit(storage)) == 2  # no decision, no audit


def test_a_retrain_started_or_refused_on_drift_is_notified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = retrain_config(tmp_path / "ws").model_dump(mode="json")
    data["alerts"]["webhooks"] = [
        {"url": "${KFLOOP_ALERT_WEBHOOK_URL}", "events": ["retrain_started", "retrain_refused"]}
    ]
    config = parse_config(data, "notifying config")
    storage = LocalStorage(tmp_path / "ws")
    v1 = champion(storage, config, tmp_path)
    launcher = FakeLauncher()
    with webhook_receiver() as hook:
        monkeypatch.setenv("KFLOOP_ALERT_WEBHOOK_URL", hook.url)
        decide(config, storage, check(storage, config, v1, NO_DRIFT, T0), launcher, now=T0)  # routine: not sent
        for minutes in (1, 2):
            at = T0 + timedelta(minutes=minutes)
            decide(config, storage, check(storage, config, v1, DRIFT, at), launcher, now=at)
        bodies = hook.wait_for(2)
    assert ["Retraining started" in bodies[0]["text"], "Retraining refused" in bodies[1]["text"]] == [True, True]
    assert launcher.runs[0] in json.dumps(bodies[0]) and "already started run" in bodies[1]["text"]
