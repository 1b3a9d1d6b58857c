"""The events the steps of the two-run workspace emitted: valid against the OpenLineage schema, START and COMPLETE
paired under one run id derived from the kfloop run id, steps linked to their pipeline run, and the facets
(schema, row counts, data quality, source file version, model version) saying what the workspace's own records
say."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import defaultdict

import pytest
from jsonschema import ValidationError

from kfloop import lake, layout
from kfloop.lineage.events import run_uuid
from kfloop.lineage.graph import facet, read_events
from kfloop.lineage.run import pipeline_job
from kfloop.schema import arrow_schema
from tests.lineage.conftest import MODEL, TwoRuns
from tests.lineage.schema_check import validate_event

STEPS = {"ingest", "validate", "features", "training_set", "train"}


def _by_job(events: list[dict], state: str = "COMPLETE") -> dict[str, list[dict]]:
    out = defaultdict(list)
    for e in events:
        if e["eventType"] == state:
            out[e["job"]["name"]].append(e)
    return out


def test_every_event_validates_against_the_openlineage_schema(two_runs: TwoRuns) -> None:
    events = read_events(two_runs.storage)
    assert {e["job"]["name"] for e in events} == STEPS | {"evaluate", "deploy", "drift_check", "retrain_decision"}
    for event in events:
        validate_event(event)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda e: e["run"].update(runId="not-a-uuid"),
        lambda e: e.update(eventType="DONE"),
        lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].update(rowCount="many"),
        lambda e: e["inputs"][0]["inputFacets"]["kfloop_sourceFile"].update(sha256="abc"),
        lambda e: e["outputs"][0]["facets"]["schema"].update(_schemaURL="https://example.com/Unknown.json"),
    ],
    ids=["run-id", "event-type", "row-count", "custom-facet", "unknown-schema"],
)
def test_the_validation_catches_a_broken_event(two_runs: TwoRuns, break_it) -> None:
    event = copy.deepcopy(_by_job(read_events(two_runs.storage))["ingest"][0])
    validate_event(event)
    break_it(event)
    with pytest.raises((ValidationError, AssertionError, ValueError)):
        validate_event(event)


def test_start_and_its_end_share_one_run_id_derived_from_the_kfloop_run(two_runs: TwoRuns) -> None:
    ns = two_runs.config.governance.lineage.namespace_for(two_runs.config.project)
    assert ns == f"kfloop://{two_runs.config.project}"
    keys = two_runs.storage.list(layout.lineage_events_prefix() + "/")
    assert len(keys) == len(read_events(two_runs.storage)) // 2
    for key in keys:
        events = [json.loads(line) for line in two_runs.storage.read_text(key).splitlines()]
        assert [e["eventType"] for e in events] == ["START", "COMPLETE"], key
        kfloop_run = events[0]["run"]["facets"]["kfloop_run"]["runId"]
        assert key.endswith(f"/{kfloop_run}.jsonl")
        assert {e["run"]["runId"] for e in events} == {run_uuid(ns, events[0]["job"]["name"], kfloop_run)}
    raw = lake.read_manifest(two_runs.storage, two_runs.config.source.dataset)
    ingests = {e["run"]["facets"]["kfloop_run"]["runId"] for e in _by_job(read_events(two_runs.storage))["ingest"]}
    assert ingests == {r["run_id"] for r in raw.runs}  # the lake's run ids are the events' kfloop run ids


def test_the_steps_of_one_pipeline_run_share_its_parent(two_runs: TwoRuns) -> None:
    config = two_runs.config
    ns = config.governance.lineage.namespace_for(config.project)
    children: dict[str | None, set[str]] = defaultdict(set)
    for e in read_events(two_runs.storage):
        parent = e["run"]["facets"].get("parent")
        if parent is not None:
            assert parent["job"] == {"namespace": ns, "name": pipeline_job(config), "facets": {}}
        children[parent and parent["run"]["runId"]].add(e["job"]["name"])
    first, second = (run_uuid(ns, pipeline_job(config), p) for p in two_runs.pipelines)
    assert children == {first: STEPS | {"evaluate", "deploy"}, second: STEPS, None: {"drift_check", "retrain_decision"}}


def test_the_facets_say_what_the_workspace_records_say(two_runs: TwoRuns) -> None:
    config, storage = two_runs.config, two_runs.storage
    done = _by_job(read_events(storage))
    raw = lake.read_manifest(storage, config.source.dataset)
    by_source = {r["source"]: r for r in raw.runs}
    for event in done["ingest"]:  # the source file's version and the rows it added
        source, lake_out = event["inputs"][0], event["outputs"][0]
        file = facet(source, "kfloop_sourceFile")
        with open(file["uri"], "rb") as f:
            assert file["sha256"] == hashlib.sha256(f.read()).hexdigest() == facet(source, "version")["datasetVersion"]
        assert file["uri"] in map(str, two_runs.sources)
        assert facet(lake_out, "outputStatistics")["rowCount"] == by_source[file["uri"]]["rows_written"] > 0
        fields = [(f["name"], f["type"]) for f in facet(lake_out, "schema")["fields"]]
        assert fields == [(f.name, str(f.type)) for f in arrow_schema(config.source)]
    for event in done["validate"]:  # data quality from the run's own contract report
        raw_in, clean_out = event["inputs"][0], event["outputs"][0]
        contract = facet(clean_out, "kfloop_contract")
        report = json.loads(storage.read_text(contract["report"]))
        assert facet(raw_in, "dataQualityMetrics")["rowCount"] == report["rows_in"]
        assertions = facet(raw_in, "dataQualityAssertions")["assertions"]
        assert sorted(a["name"] for a in assertions) == sorted(c["check"] for c in report["checks"])
        assert facet(clean_out, "outputStatistics")["rowCount"] == report["rows_clean"]
        assert contract["gatePassed"] is True and contract["checks"] == len(report["checks"])
    service = config.features.service
    for event in done["training_set"]:
        out = event["outputs"][0]
        manifest = json.loads(
            storage.read_text(layout.training_set_manifest_key(service, out["facets"]["version"]["datasetVersion"]))
        )
        assert facet(out, "outputStatistics")["rowCount"] == sum(manifest["rows"].values())
        names = [f["name"] for f in facet(out, "schema")["fields"]]
        assert set(manifest["features"]) | {manifest["label"]} <= set(names)
        assert "unknown" not in {f["type"] for f in facet(out, "schema")["fields"]}
    made = {
        facet(e["outputs"][0], "kfloop_modelVersion")["version"]: facet(e["outputs"][0], "kfloop_modelVersion")
        for e in done["train"]
    }
    assert sorted(made) == sorted(two_runs.versions)
    for version, ts in zip(two_runs.versions, two_runs.training_sets, strict=True):
        assert made[version]["model"] == MODEL and made[version]["trainingSet"] == ts
