"""One OpenLineage run event as the JSON the spec defines, built with the openlineage-python client's classes.

A step run's OpenLineage run id is a UUID derived from its namespace, job and kfloop run id, so START and
COMPLETE (or FAIL) carry the same id however far apart they are written, and the same run id again names the
same run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import parent_run
from openlineage.client.serde import Serde

from kfloop.lineage import facets

#: The OpenLineage spec version the events follow (the client's classes and tests/lineage/schema/).
SPEC = "2-0-2"


def run_uuid(namespace: str, job: str, kfloop_run_id: str) -> str:
    """The OpenLineage run id of kfloop run ``kfloop_run_id`` of ``job``: stable, so every event of it matches."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{job}/{kfloop_run_id}"))


@dataclass(frozen=True)
class Parent:
    """The run that started this one (the pipeline run of a step): its namespace, job name and OpenLineage id."""

    namespace: str
    job: str
    run_id: str


@dataclass(frozen=True)
class RunRef:
    """Who an event is about: the job (a step) in its namespace, and the run."""

    namespace: str
    job: str
    kfloop_run_id: str
    parent: Parent | None = None

    @property
    def run_id(self) -> str:
        return run_uuid(self.namespace, self.job, self.kfloop_run_id)


@dataclass
class DatasetRef:
    """A dataset a run read or wrote, with its facets (client facet objects keyed by facet name)."""

    namespace: str
    name: str
    facets: dict[str, Any] = field(default_factory=dict)
    input_facets: dict[str, Any] = field(default_factory=dict)
    output_facets: dict[str, Any] = field(default_factory=dict)


def build(
    state: str,
    ref: RunRef,
    *,
    inputs: list[DatasetRef] | None = None,
    outputs: list[DatasetRef] | None = None,
    error: Any = None,
    now: datetime | None = None,
) -> dict:
    """The event (``state``: START, COMPLETE or FAIL) as a JSON-able dict; ``error``: an ErrorMessageRunFacet."""
    run_facets: dict[str, Any] = {"kfloop_run": facets.kfloop_run(ref.kfloop_run_id, ref.job)}
    if ref.parent is not None:
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=ref.parent.run_id),
            job=parent_run.Job(namespace=ref.parent.namespace, name=ref.parent.job),
            producer=facets.PRODUCER,
        )
    if error is not None:
        run_facets["errorMessage"] = error
    event = RunEvent(
        eventType=RunState[state],
        eventTime=(now or datetime.now(UTC)).isoformat(),
        run=Run(runId=ref.run_id, facets=run_facets),
        job=Job(namespace=ref.namespace, name=ref.job, facets={"jobType": facets.job_type()}),
        producer=facets.PRODUCER,
        inputs=[
            InputDataset(namespace=d.namespace, name=d.name, facets=d.facets, inputFacets=d.input_facets)
            for d in inputs or []
        ],
        outputs=[
            OutputDataset(namespace=d.namespace, name=d.name, facets=d.facets, outputFacets=d.output_facets)
            for d in outputs or []
        ],
    )
    return Serde.to_dict(event)
