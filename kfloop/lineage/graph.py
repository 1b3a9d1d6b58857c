"""The lineage graph, read back from the emitted events: which run wrote which version of which dataset.

Only completed runs count (a FAIL wrote nothing that later steps read). Each lookup answers one hop of the walk
(``kfloop.lineage.walk``): the train run that produced a model version, the training-set run that wrote a training
set, the validate run that wrote a clean version, the ingest runs of a lake version and their source files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from kfloop import layout
from kfloop.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRecord:
    """One completed step run: its job, ids, when it ended, and its datasets as the COMPLETE event gave them."""

    job: str
    run_id: str
    kfloop_run_id: str
    event_time: str
    inputs: list[dict]
    outputs: list[dict]
    parent: str | None = None  # the parent run's id


def version_of(dataset: dict) -> str | None:
    version = facet(dataset, "version", groups=("facets",)).get("datasetVersion")
    return version if isinstance(version, str) else None


def facet(dataset: dict, name: str, groups: tuple[str, ...] = ("facets", "inputFacets", "outputFacets")) -> dict:
    """A facet of a dataset, from its dataset, input or output facets ({} when absent or not an object)."""
    for group in groups:
        facets = dataset.get(group)
        found = facets.get(name) if isinstance(facets, dict) else None
        if isinstance(found, dict):
            return found
    return {}


@dataclass
class EventIndex:
    """Completed runs of the workspace's events, by job."""

    runs: dict[str, list[RunRecord]] = field(default_factory=dict)
    failed: int = 0  # runs whose last event is FAIL
    files: int = 0

    def by_job(self, job: str) -> list[RunRecord]:
        return self.runs.get(job, [])

    def producer(self, job: str, name: str, version: str) -> RunRecord | None:
        """The newest ``job`` run that wrote ``version`` of dataset ``name`` (first one not reusing an older
        result, when some did: a reused model's train run read a newer training set than the one it was made of)."""
        found = [r for r in self.by_job(job) for o in r.outputs if o["name"] == name and version_of(o) == version]
        fresh = [r for r in found if not any(facet(o, "kfloop_modelVersion").get("reused") for o in r.outputs)]
        return (fresh or found)[0] if found else None

    def ingest_run(self, kfloop_run_id: str) -> RunRecord | None:
        return next((r for r in self.by_job("ingest") if r.kfloop_run_id == kfloop_run_id), None)


def _record(events: list[dict]) -> RunRecord | None:
    done = [e for e in events if e.get("eventType") == "COMPLETE"]
    if not done:
        return None
    e = done[-1]
    run_facets = e["run"].get("facets") or {}
    parent = (run_facets.get("parent") or {}).get("run", {}).get("runId")
    return RunRecord(
        job=e["job"]["name"],
        run_id=e["run"]["runId"],
        kfloop_run_id=(run_facets.get("kfloop_run") or {}).get("runId", ""),
        event_time=e["eventTime"],
        inputs=e.get("inputs") or [],
        outputs=e.get("outputs") or [],
        parent=parent,
    )


def _well_formed(event: object) -> bool:
    """The parts of a run event the walks read are there, with their types (any other line is not one of ours:
    a hand edit, a truncated copy, another tool's JSON)."""
    if not isinstance(event, dict):
        return False
    job, run = event.get("job"), event.get("run")
    datasets = [*(event.get("inputs") or []), *(event.get("outputs") or [])]
    return (
        isinstance(job, dict)
        and isinstance(job.get("name"), str)
        and isinstance(job.get("namespace"), str)
        and isinstance(run, dict)
        and isinstance(run.get("runId"), str)
        and isinstance(run.get("facets") or {}, dict)
        and isinstance(event.get("eventType"), str)
        and isinstance(event.get("eventTime"), str)
        and isinstance(event.get("inputs") or [], list)
        and isinstance(event.get("outputs") or [], list)
        and all(isinstance(d, dict) and isinstance(d.get("name"), str) for d in datasets)
    )


def read_events(storage: Storage) -> list[dict]:
    """Every stored event, file by file (a line that does not parse, or is no run event, is logged and skipped;
    so is a file that is not UTF-8 text)."""
    out = []
    for key in sorted(storage.list(layout.lineage_events_prefix() + "/")):
        if not key.endswith(".jsonl"):
            continue
        try:
            text = storage.read_text(key)
        except UnicodeDecodeError:
            log.warning("lineage: %s is not UTF-8 text; skipped", storage.uri(key))
            continue
        for n, line in enumerate(text.splitlines(), 1):
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("lineage: %s line %d is not JSON; skipped", storage.uri(key), n)
                continue
            if not _well_formed(event):
                log.warning("lineage: %s line %d is not an OpenLineage run event; skipped", storage.uri(key), n)
                continue
            out.append(event)
    return out


def load_index(storage: Storage, namespace: str) -> EventIndex:
    """The completed runs of ``namespace``'s jobs, newest first within each job."""
    by_run: dict[str, list[dict]] = {}
    for event in read_events(storage):
        if event.get("job", {}).get("namespace") == namespace:
            by_run.setdefault(event["run"]["runId"], []).append(event)
    index = EventIndex(files=len(by_run))
    for events in by_run.values():
        record = _record(events)
        if record is None:
            index.failed += any(e.get("eventType") == "FAIL" for e in events)
            continue
        index.runs.setdefault(record.job, []).append(record)
    for runs in index.runs.values():
        runs.sort(key=lambda r: r.event_time, reverse=True)
    return index
