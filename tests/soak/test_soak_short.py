"""The short fault soak (CI's; ``make soak`` is the long one): five tiny pipeline runs, each fault kind at least once
(S3 5xx and timeouts through the proxy, a Redis restart during materialize, a step SIGKILLed and re-run, a full
workspace disk), every invariant checked after every run (tests/soak/invariants.py)."""

from __future__ import annotations

import pytest

from tests.soak.runner import Soak, summary

pytestmark = pytest.mark.s3

#: One entry per run (FAULT[:STEP][@LANE]): the first run makes the first training set; the kill is of ingest,
#: whose subprocess imports least.
PLAN = ["none", "s3", "redis@local", "sigkill:ingest@local", "disk"]


@pytest.fixture(scope="module")
def soak(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Soak:
    # a higher S3 fault rate than make soak's (so one run sees several); on a full disk at most 30 % of a run's
    # writes fit (so the fault always fires)
    with Soak(tmp_path_factory.mktemp("soak"), moto_endpoint, seed=7, s3_rate=0.05, disk_free_share=0.3) as soak:
        soak.run(PLAN)
        yield soak


def test_every_fault_fired(soak: Soak) -> None:
    fired = {r.fault: r.fired for r in soak.records if r.fault != "none"}
    assert fired == {"s3": True, "redis": True, "sigkill": True, "disk": True}, [r.detail for r in soak.records]


def test_no_invariant_is_violated_after_any_run(soak: Soak) -> None:
    assert [v for r in soak.records for v in r.violations] == []


def test_every_run_succeeds_with_retries_and_failed_attempts_name_their_cause(soak: Soak) -> None:
    assert all(r.ok for r in soak.records), [r.errors for r in soak.records]
    killed = next(r for r in soak.records if r.fault == "sigkill")
    assert not killed.first_ok and killed.errors[0].startswith("attempt 1: ingest: KfloopError: step ingest was killed")
    full = next(r for r in soak.records if r.fault == "disk")
    assert not full.first_ok and "No space left on device" in full.errors[0]


def test_the_report_passes(soak: Soak) -> None:
    text, passed = summary(soak.records, soak.disk.kind, 0.0)
    assert passed, text
    assert "invariant violations: 0 distinct" in text
