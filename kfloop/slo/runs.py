"""The record of every training pipeline run, the events of the pipeline-success objective.

``kfloop run`` (also the run a local retrain starts, which is ``kfloop run`` in its own process) writes
``monitoring/<model>/runs/<run>.json`` when it starts (outcome ``running``) and rewrites it, atomically, when it
ends: ``succeeded`` or ``failed``, with the gate that stopped it (``contract``) or the reason. A candidate the
promotion gate refused is a *succeeded* run whose ``gate`` is ``promotion``: the pipeline did its job, the
model was just not better. A run stopped by the data contract gate, a step that crashed and an interrupted run
are failures. A run killed outright stays ``running`` and is not counted (``kfloop slo status`` names how many).

Each run also rewrites ``monitoring/<model>/pipeline_runs.prom``: every recorded run counted by outcome, a
counter (``kfloop_pipeline_runs_total``) a textfile collector hands Prometheus for the same indicator there; it
never goes down (see :func:`runs_metrics`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from kfloop.layout import pipeline_run_key, pipeline_runs_metrics_key, pipeline_runs_prefix
from kfloop.monitoring.event_metrics import PIPELINE_RUNS
from kfloop.slo.status import Count
from kfloop.storage import Storage

__all__ = [
    "OUTCOMES",
    "RunRecord",
    "begin_run",
    "end_run",
    "finish_run",
    "pipeline_count",
    "read_runs",
    "runs_metrics",
    "start_run",
]

log = logging.getLogger(__name__)

Outcome = Literal["running", "succeeded", "failed"]
#: The finished outcomes, the label values of kfloop_pipeline_runs_total.
OUTCOMES = ("succeeded", "failed")


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run as the pipeline-success objective sees it."""

    run_id: str
    model: str
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = "running"
    gate: str | None = None  # the gate that stopped (contract) or refused (promotion) it
    reason: str | None = None  # the failure's first line

    def to_json(self) -> str:
        body = asdict(self) | {"started": self.started.isoformat(), "ended": _iso(self.ended)}
        return json.dumps(body)

    @staticmethod
    def from_json(text: str, key: str) -> RunRecord:
        """A stored record; a malformed one is an error naming its key."""
        try:
            body = json.loads(text)
            ended = body.get("ended")
            record = RunRecord(
                str(body["run_id"]),
                str(body["model"]),
                datetime.fromisoformat(body["started"]),
                datetime.fromisoformat(ended) if ended else None,
                body.get("outcome", "running"),
                body.get("gate"),
                body.get("reason"),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a pipeline run record ({type(err).__name__}: {err})") from err
        if record.outcome not in ("running", *OUTCOMES):
            raise ValueError(f"{key}: outcome {record.outcome!r} is not running, succeeded or failed")
        return record


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def start_run(storage: Storage, model: str, run_id: str, now: datetime | None = None) -> RunRecord:
    """Record a run as started (``running``), so one killed before it ends is still known."""
    record = RunRecord(run_id, model, now or datetime.now(UTC))
    storage.write_text(pipeline_run_key(model, run_id), record.to_json())
    return record


def end_run(
    storage: Storage,
    record: RunRecord,
    *,
    error: BaseException | None = None,
    gate: str | None = None,
    now: datetime | None = None,
) -> RunRecord:
    """Record how a run ended (``error``: why it failed; ``gate``: the gate that stopped it or refused its
    candidate), then recount every run into ``pipeline_runs.prom``."""
    reason = None
    if error is not None:
        text = str(error)
        reason = (text.splitlines()[0] if text else type(error).__name__)[:500]
    done = replace(
        record, ended=now or datetime.now(UTC), outcome="failed" if error else "succeeded", gate=gate, reason=reason
    )
    storage.write_text(pipeline_run_key(record.model, record.run_id), done.to_json())
    key = pipeline_runs_metrics_key(record.model)
    try:
        previous = _counts(storage.read_text(key))
    except FileNotFoundError:
        previous = {}
    storage.write_bytes(key, runs_metrics(record.model, read_runs(storage, record.model), previous))
    return done


def _counts(text: str) -> dict[str, float]:
    """The per-outcome values of a ``pipeline_runs.prom`` (what the counter said before)."""
    return {
        sample.labels.get("outcome", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == PIPELINE_RUNS + "_total"
    }


def begin_run(storage: Storage | None, model: str) -> RunRecord | None:
    """``kfloop run``'s hook as it starts: :func:`start_run` under a new run id; never raises (the record must
    not fail the run: a problem is logged and the run goes unrecorded)."""
    if storage is None:
        return None
    from kfloop.step import new_run_id

    try:
        return start_run(storage, model, new_run_id())
    except Exception:
        log.exception("could not record the pipeline run's start")
        return None


def finish_run(
    storage: Storage | None,
    record: RunRecord | None,
    *,
    error: BaseException | None = None,
    decision: dict | None = None,
) -> None:
    """``kfloop run``'s hook as it ends: :func:`end_run` with the gate :func:`~kfloop.monitoring.run_alerts.run_events`
    names (``contract`` from the error, ``promotion`` from the gate's ``decision``); never raises."""
    if storage is None or record is None:
        return
    from kfloop.monitoring.run_alerts import run_events

    try:
        gates, _ = run_events(record.model, error, decision)
        end_run(storage, record, error=error, gate=next(iter(sorted(gates)), None))
    except Exception:
        log.exception("could not record the pipeline run's end")


def read_runs(storage: Storage, model: str) -> list[RunRecord]:
    """Every recorded run of ``model``, oldest start first; a record that cannot be read is logged and skipped
    (one bad object must not hide every other run)."""
    out = []
    for key in storage.list(pipeline_runs_prefix(model) + "/"):
        if not key.endswith(".json"):
            continue
        try:
            out.append(RunRecord.from_json(storage.read_text(key), key))
        except FileNotFoundError:
            continue  # deleted meanwhile
        except ValueError as err:
            log.warning("skipping %s", err)
    return sorted(out, key=lambda r: (r.started, r.run_id))


def runs_metrics(model: str, records: list[RunRecord], previous: dict[str, float] | None = None) -> bytes:
    """``kfloop_pipeline_runs_total{model,outcome}``: the recorded runs by outcome (running ones left out), never
    below ``previous`` (the file's values before): a counter that went down would read as a reset, and
    Prometheus' ``increase`` would count every run again. So a run that recounts before an overlapping one wrote
    its record, or records deleted later, never lower it."""
    fam = CounterMetricFamily(PIPELINE_RUNS, "Training pipeline runs by outcome.", labels=["model", "outcome"])
    for outcome in OUTCOMES:
        counted = float(sum(r.outcome == outcome for r in records))
        fam.add_metric([model, outcome], max(counted, (previous or {}).get(outcome, 0.0)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Family(fam))
    return generate_latest(registry)


class _Family(Collector):
    def __init__(self, family: CounterMetricFamily) -> None:
        self.family = family

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield self.family


def pipeline_count(storage: Storage, model: str, start: datetime, end: datetime) -> Count:
    """The pipeline-success events: runs that ended in ``[start, end)``, good when they succeeded."""
    records = read_runs(storage, model)
    ended = [r for r in records if r.ended is not None and start <= r.ended < end]
    failed = [r for r in ended if r.outcome == "failed"]
    running = sum(r.outcome == "running" and r.started < end for r in records)
    detail = f"{len(ended)} run(s) ended, {len(failed)} failed"
    if failed:
        newest = max(failed, key=lambda r: r.ended or r.started)
        detail += f" (newest: {newest.run_id}: {newest.gate or newest.reason or '?'})"
    if running:
        detail += f"; {running} unfinished (running, or killed before recording its end)"
    return Count(len(ended) - len(failed), len(ended), f"{detail} [{pipeline_runs_prefix(model)}/]")
