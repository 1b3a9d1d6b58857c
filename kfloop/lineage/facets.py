"""The facets kfloop's events carry: the spec's own (built with the openlineage-python client) and kfloop's custom
ones (``kfloop_*``), whose JSON schema is :data:`CUSTOM_SCHEMA`.

Facets describe data, never hold it: no example rows, no column minimums or maximums (a value there could be an
entity's key, which erasure could not reach in an event already sent to a backend).
"""

from __future__ import annotations

from typing import Any

from openlineage.client.event_v2 import set_producer
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    schema_dataset,
)

import kfloop

#: ``producer`` of every event and ``_producer`` of every facet: this code, at this version.
PRODUCER = f"https://github.com/kfloop/kfloop/tree/v{kfloop.__version__}"
#: Where the custom facets' schema (:data:`CUSTOM_SCHEMA`) is published; ``_schemaURL`` points into it.
CUSTOM_SCHEMA_URL = f"{PRODUCER}/kfloop/lineage/KfloopFacets.json"


set_producer(PRODUCER)  # the client's default for facets built without one


def _schema(name: str) -> str:
    return f"{CUSTOM_SCHEMA_URL}#/$defs/{name}"


def _custom(name: str, **fields: Any) -> dict:
    """A kfloop facet (``kfloop_*``): a plain JSON object with the base facet's ``_producer`` and ``_schemaURL``."""
    return {"_producer": PRODUCER, "_schemaURL": _schema(name), **{k: v for k, v in fields.items() if v is not None}}


def source_file(uri: str, sha256: str, etag: str | None = None, version_id: str | None = None) -> dict:
    """The raw file an ingest read: where, and which bytes (sha256; the object store's etag/version when known)."""
    return _custom("SourceFileInputFacet", uri=uri, sha256=sha256, etag=etag, versionId=version_id)


def lake_runs(runs: list[str]) -> dict:
    """The ingest runs (kfloop run ids) whose rows make up the lake version a step read."""
    return _custom("LakeRunsInputFacet", runs=runs)


def contract(hash_: str, report: str, gate_passed: bool, quality_score: float, checks: int) -> dict:
    """The data contract a clean dataset was validated under, and the outcome."""
    return _custom(
        "ContractDatasetFacet",
        hash=hash_,
        report=report,
        gatePassed=gate_passed,
        qualityScore=quality_score,
        checks=checks,
    )


def model_version(
    model: str, version: str, stage: str | None, training_set: str | None, identity: str | None, reused: bool
) -> dict:
    """The model version a step produced: registry name, version, stage, training set and training identity."""
    return _custom(
        "ModelVersionDatasetFacet",
        model=model,
        version=version,
        stage=stage,
        trainingSet=training_set,
        identity=identity,
        reused=reused,
    )


def kfloop_run(run_id: str, step: str) -> dict:
    """The kfloop run id the OpenLineage run id was derived from, so a record of the workspace finds its events."""
    return _custom("KfloopRunFacet", runId=run_id, step=step)


def _base(required: list[str], properties: dict[str, Any], facet: str) -> dict:
    return {
        "allOf": [
            {"$ref": f"https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/{facet}"},
            {"type": "object", "properties": properties, "required": required},
        ],
        "type": "object",
    }


_STR, _NSTR = {"type": "string"}, {"type": ["string", "null"]}
#: JSON schema of the custom facets (tests validate events against it next to the spec's).
CUSTOM_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": CUSTOM_SCHEMA_URL,
    "$defs": {
        "SourceFileInputFacet": _base(
            ["uri", "sha256"],
            {"uri": _STR, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "etag": _NSTR, "versionId": _NSTR},
            "InputDatasetFacet",
        ),
        "LakeRunsInputFacet": _base(["runs"], {"runs": {"type": "array", "items": _STR}}, "InputDatasetFacet"),
        "ContractDatasetFacet": _base(
            ["hash", "report", "gatePassed", "qualityScore", "checks"],
            {
                "hash": _STR,
                "report": _STR,
                "gatePassed": {"type": "boolean"},
                "qualityScore": {"type": "number", "minimum": 0, "maximum": 100},
                "checks": {"type": "integer", "minimum": 0},
            },
            "DatasetFacet",
        ),
        "ModelVersionDatasetFacet": _base(
            ["model", "version"],
            {
                "model": _STR,
                "version": {"type": "string", "pattern": "^v[0-9]+$"},
                "stage": _NSTR,
                "trainingSet": _NSTR,
                "identity": _NSTR,
                "reused": {"type": "boolean"},
            },
            "DatasetFacet",
        ),
        "KfloopRunFacet": _base(["runId", "step"], {"runId": _STR, "step": _STR}, "RunFacet"),
    },
}


# --- the spec's facets, with kfloop as their producer ----------------------------------------------------------
def schema(columns: dict[str, str]) -> schema_dataset.SchemaDatasetFacet:
    """Column names and types."""
    fields = [schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in columns.items()]
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


def output_statistics(
    rows: int, files: int | None = None
) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet:
    return output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=rows, fileCount=files, producer=PRODUCER
    )


def version(value: str) -> dataset_version_dataset.DatasetVersionDatasetFacet:
    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=value, producer=PRODUCER)


def quality_metrics(report: Any) -> data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet:
    """Row count and, per column the contract checks for nulls, the null count (``report``: a QualityReport)."""
    metrics = data_quality_metrics_input_dataset
    columns = {
        c.column: metrics.ColumnMetrics(nullCount=c.failed, count=float(c.total))
        for c in report.checks
        if c.kind == "nullable" and c.column
    }
    return metrics.DataQualityMetricsInputDatasetFacet(
        columnMetrics=columns, rowCount=report.rows_in, producer=PRODUCER
    )


def row_count(rows: int) -> data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet:
    """Only the rows read (the drift check's window)."""
    return data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(columnMetrics={}, rowCount=rows)


def quality_assertions(report: Any) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    """Each contract check as an assertion: passed or not, its column and severity (``report``: a QualityReport)."""
    assertions = [
        data_quality_assertions_dataset.Assertion(
            assertion=c.kind,
            name=c.check,
            success=c.passed,
            column=c.column,
            severity=c.severity,
            actual=f"{c.failed} of {c.total} failing",  # counts only: a check's message may quote a value
        )
        for c in report.checks
    ]
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER)


def error(err: BaseException, trace: str) -> error_message_run.ErrorMessageRunFacet:
    return error_message_run.ErrorMessageRunFacet(
        message=f"{type(err).__name__}: {err}", programmingLanguage="python", stackTrace=trace, producer=PRODUCER
    )


def job_type() -> job_type_job.JobTypeJobFacet:
    """Every kfloop step is a batch task of the kfloop integration."""
    return job_type_job.JobTypeJobFacet(processingType="BATCH", integration="KFLOOP", jobType="TASK", producer=PRODUCER)
