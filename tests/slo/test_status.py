"""SLO arithmetic on fixtures: the error budget left, fresh and stale minutes (carry-forward and its edges),
the pipeline run records, and every indicator from a workspace's own records (kfloop.slo)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kfloop.config import Config
from kfloop.errors import ConfigError
from kfloop.feature_repo.freshness import FreshnessSample, record_samples
from kfloop.layout import pipeline_run_key, pipeline_runs_metrics_key
from kfloop.slo.freshness import count_minutes, freshness_count
from kfloop.slo.runs import begin_run, end_run, finish_run, pipeline_count, read_runs, start_run
from kfloop.slo.status import SLO_NAMES, Count, budget_remaining, measured, slo_status
from kfloop.storage import LocalStorage
from tests.slo.conftest import NOW, slo_config

T = timedelta(minutes=15)
M = timedelta(minutes=1)
START = NOW - timedelta(hours=1)


# --- the budget -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("objective", "good", "total", "left"),
    [
        (0.995, 995, 1000, 0.0),  # exactly at the objective: spent, not 1e-16 left
        (0.999, 999_000, 1_000_000, 0.0),
        (0.995, 997.5, 1000, 0.5),  # half the 5 bad events allowed
        (0.99, 1000, 1000, 1.0),  # untouched
        (0.99, 980, 1000, -1.0),  # twice the budget spent
        (0.99, 19.8, 20, 0.0),  # Prometheus' extrapolated counts are fractions
    ],
)
def test_budget_left(objective: float, good: float, total: float, left: float) -> None:
    assert budget_remaining(objective, good, total) == left


def test_no_events_is_no_data_not_a_full_budget() -> None:
    assert budget_remaining(0.99, 0, 0) is None
    status = measured("serving_latency", 0.99, "30d", Count(0, 0, "nothing"), "workspace")
    assert status.sli is None and status.budget_remaining is None and not status.exhausted
    spent = measured("pipeline_success", 0.995, "30d", Count(199, 200, "runs"), "workspace")
    assert spent.sli == pytest.approx(0.995) and spent.budget_remaining == 0.0 and spent.exhausted


# --- fresh minutes --------------------------------------------------------------------------------
def _s(minute_offset: int, newest_offset: float | None, *, events: int = 5, lag_p99: float = 30.0) -> FreshnessSample:
    """A sample of view v at START + minute_offset minutes whose newest event is at START + newest_offset."""
    minute = START + minute_offset * M
    newest = None if newest_offset is None else START + timedelta(minutes=newest_offset)
    return FreshnessSample("v", minute, events, lag_p99 / 2, lag_p99, lag_p99, newest)


def test_no_sample_ever_counts_no_minutes() -> None:
    assert count_minutes([], START, NOW, T) == (0, 0)


def test_minutes_before_the_first_sample_do_not_count_and_the_age_then_grows() -> None:
    # written at minute 10 with its newest event in that minute: fresh through minute 10 + 14 (age 15m at its end)
    assert count_minutes([_s(10, 10)], START, NOW, T) == (15, 50)


def test_the_newest_event_is_carried_in_from_before_the_window() -> None:
    carried = _s(-12, -10)  # newest event 10 minutes before the window: fresh while m + 1 - (-10) <= 15
    assert count_minutes([], START, NOW, T, carried) == (5, 60)
    assert count_minutes([], START, NOW, T, _s(-120, None)) == (0, 60)  # known to exist, no value known: stale


def test_an_age_of_exactly_the_threshold_is_fresh() -> None:
    good, total = count_minutes([_s(0, -14)], START, START + 3 * M, T)  # minute 0 ends at age 15m
    assert (good, total) == (1, 3)


def test_a_minute_written_in_time_is_fresh_even_when_the_newest_event_is_unknown() -> None:
    written = _s(5, None, lag_p99=60)  # rows written with p99 lag 1m, newest event not reported
    assert count_minutes([written], START, START + 10 * M, T) == (1, 5)  # then no age known: stale
    slow = _s(5, None, lag_p99=T.total_seconds() + 1)
    assert count_minutes([slow], START, START + 10 * M, T) == (0, 5)


def test_an_empty_write_is_not_a_write_in_time() -> None:
    empty = _s(5, None, events=0, lag_p99=0.0)  # a writer that flushed nothing reports lag 0
    assert count_minutes([empty], START, START + 10 * M, T) == (0, 5)


def test_a_sample_without_a_newest_event_keeps_the_one_before() -> None:
    samples = [_s(0, 0), _s(3, None, events=0, lag_p99=0.0)]  # minute 3 tells nothing new
    assert count_minutes(samples, START, NOW, T) == (15, 60)  # as if only minute 0 had written


def test_samples_outside_the_range_are_ignored_and_a_late_write_refreshes() -> None:
    samples = [_s(70, 70), _s(0, 0), _s(40, 39)]  # unsorted; minute 70 is after the window
    # minutes 0-14 fresh, 15-39 stale, 40 fresh (age 2m) through 40 + 13
    assert count_minutes(samples, START, NOW, T) == (15 + 14, 60)


def test_freshness_sums_the_views_and_names_the_silent_ones(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws")
    fresh_until = NOW - timedelta(minutes=30)
    record_samples(
        storage,
        [
            FreshnessSample("customer_activity", START, 10, 5.0, 20.0, 25.0, START),
            FreshnessSample("customer_activity", fresh_until - M, 10, 5.0, 20.0, 25.0, fresh_until - M),
        ],
    )
    count = freshness_count(config, storage, START, NOW)
    # written at minutes 0 and 29: fresh through 14 minutes after each (0-14, 29-43), stale between and after
    assert (count.good, count.total) == (30, 60)
    assert "30 of 60 view-minutes" in count.detail and "most in customer_activity" in count.detail
    assert "no write recorded: merchant_risk" in count.detail


def test_freshness_threshold_is_features_freshness_sla(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    data = slo_config(tmp_path / "ws").model_dump(mode="json")
    data["features"]["freshness_sla"] = "30m"
    config = Config.model_validate_json(json.dumps(data))
    record_samples(storage, [FreshnessSample("customer_activity", START, 10, 5.0, 20.0, 25.0, START)])
    assert (freshness_count(config, storage, START, NOW).good, 60) == (30, 60)


# --- pipeline runs --------------------------------------------------------------------------------
def test_run_records_count_what_ended_in_the_window(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    before = start_run(storage, "m", "r0", NOW - timedelta(days=40))
    end_run(storage, before, error=RuntimeError("old failure"), now=NOW - timedelta(days=40))  # outside
    ok = start_run(storage, "m", "r1", NOW - timedelta(days=2))
    end_run(storage, ok, gate="promotion", now=NOW - timedelta(days=2) + timedelta(minutes=9))
    bad = start_run(storage, "m", "r2", NOW - timedelta(days=1))
    end_run(storage, bad, error=RuntimeError("data contract gate failed\n  rows"), gate="contract", now=NOW - M)
    start_run(storage, "m", "r3", NOW - timedelta(hours=1))  # still running (or killed)
    count = pipeline_count(storage, "m", NOW - timedelta(days=30), NOW)
    assert (count.good, count.total) == (1, 2)
    assert "1 failed (newest: r2: contract)" in count.detail and "1 unfinished" in count.detail
    stored = json.loads(storage.read_text(pipeline_run_key("m", "r2")))
    assert stored["outcome"] == "failed" and stored["reason"] == "data contract gate failed"
    assert json.loads(storage.read_text(pipeline_run_key("m", "r1")))["outcome"] == "succeeded"
    counter = {
        s.labels["outcome"]: s.value
        for fam in text_string_to_metric_families(storage.read_text(pipeline_runs_metrics_key("m")))
        for s in fam.samples
    }
    assert counter == {"succeeded": 1.0, "failed": 2.0}  # every recorded run, not only the window's
    storage.delete(pipeline_run_key("m", "r0"))  # a record cleaned up: the counter must not go down (a reset)
    end_run(storage, start_run(storage, "m", "r4", NOW), now=NOW)
    after = text_string_to_metric_families(storage.read_text(pipeline_runs_metrics_key("m")))
    assert {s.labels["outcome"]: s.value for fam in after for s in fam.samples} == {"succeeded": 2.0, "failed": 2.0}


def test_the_run_hook_records_the_gate_and_never_raises(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    refused = {"version": "v2", "promoted": False, "reasons": ["pr_auc below the champion's"]}
    run = begin_run(storage, "m")
    finish_run(storage, run, decision=refused)
    stopped = begin_run(storage, "m")
    finish_run(storage, stopped, error=RuntimeError("data contract gate failed on table stations"))
    crashed = begin_run(storage, "m")
    finish_run(storage, crashed, error=KeyboardInterrupt())
    by_id = {r.run_id: r for r in read_runs(storage, "m")}
    assert [(by_id[r.run_id].outcome, by_id[r.run_id].gate) for r in (run, stopped, crashed)] == [
        ("succeeded", "promotion"),
        ("failed", "contract"),
        ("failed", None),
    ]
    assert by_id[crashed.run_id].reason == "KeyboardInterrupt"
    finish_run(None, run)  # no workspace: nothing recorded, nothing raised
    broken = LocalStorage(tmp_path / "file")
    (tmp_path / "file").write_text("not a directory")
    assert begin_run(broken, "m") is None


def test_a_malformed_record_is_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = LocalStorage(tmp_path / "ws")
    end_run(storage, start_run(storage, "m", "good", NOW - M), now=NOW - M)
    storage.write_text(pipeline_run_key("m", "bad"), '{"run_id": "bad"}')
    assert [r.run_id for r in read_runs(storage, "m")] == ["good"]
    assert "runs/bad.json: not a pipeline run record" in caplog.text


# --- every indicator from the workspace -----------------------------------------------------------
def test_slo_status_from_the_workspace(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    config = slo_config(tmp_path / "ws", window="7d")
    for i, error in enumerate([None, None, None, RuntimeError("boom")]):
        end_run(
            storage,
            start_run(storage, "fraud-detector", f"r{i}", NOW - timedelta(days=i + 1)),
            error=error,
            now=NOW - timedelta(days=i + 1),
        )
    record_samples(storage, [FreshnessSample("merchant_risk", NOW - 10 * M, 3, 1.0, 2.0, 2.0, NOW - 10 * M)])
    got = {s.name: s for s in slo_status(config, storage, now=NOW + timedelta(seconds=42))}
    assert list(got) == list(SLO_NAMES)
    runs = got["pipeline_success"]
    assert (runs.good, runs.total, runs.sli, runs.window, runs.source) == (3, 4, 0.75, "7d", "workspace")
    assert runs.budget_remaining == pytest.approx(1 - 0.25 / 0.005)  # badly overspent
    fresh = got["feature_freshness"]
    assert (fresh.good, fresh.total) == (10, 10)  # the minute being written (NOW's) is not judged yet
    assert fresh.budget_remaining == 1.0
    for name in ("serving_availability", "serving_latency"):  # no serving process recorded a request
        assert got[name].sli is None and "no request of model 'fraud-detector' recorded" in got[name].detail


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        ({"window": "1d"}, "7d to 90d"),
        ({"serving_latency": {"objective": 0.99, "threshold_seconds": 0.3}}, "not a bucket bound"),
        ({"serving_availability": {"objective": 0.9}}, "page alert could never fire"),
        ({"pipeline_success": {"objective": 1.0}}, "less than 1"),
        ({"prometheus_url": "prometheus:9090"}, "prometheus_url"),
    ],
)
def test_bad_objectives_are_refused_naming_the_key(tmp_path: Path, slo: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        slo_config(tmp_path, **slo)


def test_the_moved_alert_thresholds_name_their_new_key(tmp_path: Path) -> None:
    data = slo_config(tmp_path).model_dump(mode="json")
    data["alerts"]["rules"]["availability_slo"] = 0.999
    from kfloop.config import parse_config

    with pytest.raises(ConfigError, match=r"availability_slo moved to slo\.serving_availability\.objective"):
        parse_config(data, "old.yaml")


def test_the_latency_threshold_choices_are_the_serving_histogram_buckets() -> None:
    """The config validates thresholds against SERVING_LATENCY_BUCKETS: it must be what serving exports."""
    from kfloop.config.slo import SERVING_LATENCY_BUCKETS
    from kfloop.serving.metrics import LATENCY

    assert tuple(LATENCY._upper_bounds[:-1]) == SERVING_LATENCY_BUCKETS  # the last bound is +Inf
