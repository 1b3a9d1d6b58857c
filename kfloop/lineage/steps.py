"""What each step read and wrote, as OpenLineage datasets: one describer per job, ``(config, storage, arguments,
result) -> (inputs, outputs)``, called with ``result`` None at START (inputs known from the config only).

Dataset names are workspace keys (``kfloop.layout``) in the lineage namespace; a source file is named by its
URI, in the namespace OpenLineage's naming convention gives it (``file``, ``s3://<bucket>``, ``https://<host>``).
Versions: the raw and clean lake datasets by their content hash, a training set by its run id, a model by its
registry version, a drift check by its id; ``kfloop.lineage.graph`` walks the graph by them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kfloop import lake, layout
from kfloop.config import Config
from kfloop.lineage import facets
from kfloop.lineage.events import DatasetRef
from kfloop.schema import arrow_schema
from kfloop.storage import Storage

Describe = Callable[[Config, Storage, Mapping[str, Any], Any], tuple[list[DatasetRef], list[DatasetRef]]]
#: Step names (the jobs), as the pipeline names its steps; the drift check and the retrain trigger besides.
STEPS: dict[str, Describe] = {}


def _step(name: str) -> Callable[[Describe], Describe]:
    def add(func: Describe) -> Describe:
        STEPS[name] = func
        return func

    return add


def source_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a source file by OpenLineage's naming: ``s3://b/k`` → (``s3://b``, ``k``), an HTTP URL
    → (scheme://host, path), a local path → (``file``, its absolute path)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "http", "https") and parsed.netloc:
        name = parsed.path.lstrip("/") if parsed.scheme == "s3" else parsed.path or "/"
        return f"{parsed.scheme}://{parsed.netloc}", name
    path = parsed.path if parsed.scheme == "file" else uri
    return "file", str(Path(path).expanduser().resolve())


def _ws(config: Config, name: str, **parts: dict) -> DatasetRef:
    return DatasetRef(config.governance.lineage.namespace_for(config.project), name, **parts)


def _lake_schema(config: Config) -> Any:
    return facets.schema({f.name: str(f.type) for f in arrow_schema(config.source)})


def _manifest(storage: Storage, dataset: str) -> lake.Manifest | None:
    return lake.read_manifest(storage, dataset)


# --- data ------------------------------------------------------------------------------------------------------
@_step("ingest")
def _ingest(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    uri = args.get("source_uri") or config.source.uri
    ns, name = source_dataset(uri)
    if result is None:
        return [DatasetRef(ns, name)], []
    source = DatasetRef(
        ns,
        name,
        facets={"version": facets.version(result.source_sha256)},
        input_facets={"kfloop_sourceFile": facets.source_file(uri, result.source_sha256)},
    )
    raw = _ws(
        config,
        layout.dataset_prefix(result.dataset),
        facets={"schema": _lake_schema(config), "version": facets.version(result.content_hash)},
        output_facets={"outputStatistics": facets.output_statistics(result.rows_written, result.files)},
    )
    outputs = [raw]
    if result.rows_quarantined:
        stats = {"outputStatistics": facets.output_statistics(result.rows_quarantined)}
        outputs.append(_ws(config, layout.quarantine_prefix(result.dataset), output_facets=stats))
    return [source], outputs


def lake_runs(storage: Storage, config: Config, commits: int | None) -> list[str]:
    """The ingest runs whose rows the first ``commits`` commits of the raw dataset hold (all when None): every
    run that wrote rows, or for a ``source.replace`` dataset the last such run (its file is the table)."""
    raw = _manifest(storage, config.source.dataset)
    runs = [r for r in (raw.runs if raw else [])[:commits] if r.get("rows_written")]
    runs = runs[-1:] if config.source.replace else runs
    return [r["run_id"] for r in runs]


@_step("validate")
def _validate(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    dataset = config.source.dataset
    if result is None:
        return [_ws(config, layout.dataset_prefix(dataset))], []
    from kfloop.components.train import contract_hash

    report = result.report
    clean = _manifest(storage, layout.clean_dataset(dataset))
    run = (
        next(
            (r for r in reversed(clean.runs) if r.get("report") and result.report_json_uri.endswith(r["report"])), None
        )
        if clean
        else None
    )
    if run is None and clean is not None and clean.runs and result.already_validated:
        run = clean.runs[-1]
    raw = _ws(
        config,
        layout.dataset_prefix(dataset),
        input_facets={
            "dataQualityMetrics": facets.quality_metrics(report),
            "dataQualityAssertions": facets.quality_assertions(report),
            "kfloop_lakeRuns": facets.lake_runs(lake_runs(storage, config, run.get("input_commits") if run else None)),
        },
    )
    if run is not None:
        raw.facets["version"] = facets.version(run["input_content_hash"])
    outputs = []
    if clean is not None and run is not None and report.gate_passed:
        contract = facets.contract(
            contract_hash(config), run["report"], report.gate_passed, report.quality_score, len(report.checks)
        )
        out = _ws(
            config,
            layout.dataset_prefix(layout.clean_dataset(dataset)),
            facets={"schema": _lake_schema(config), "kfloop_contract": contract},
            output_facets={"outputStatistics": facets.output_statistics(report.rows_clean)},
        )
        if clean.runs[-1] is run:  # else a newer validation replaced it already: its content is not known here
            out.facets["version"] = facets.version(clean.content_hash)
        outputs.append(out)
    if report.rows_quarantined and result.quarantine_key:
        stats = {"outputStatistics": facets.output_statistics(report.rows_quarantined)}
        outputs.append(_ws(config, result.quarantine_key.rsplit("/", 1)[0], output_facets=stats))
    return [raw], outputs


def _clean_input(config: Config, storage: Storage, version: str | None = None) -> DatasetRef:
    ref = _ws(config, layout.dataset_prefix(layout.clean_dataset(config.source.dataset)))
    if version is None:
        clean = _manifest(storage, layout.clean_dataset(config.source.dataset))
        version = clean.content_hash if clean is not None and clean.files else None
    if version:
        ref.facets["version"] = facets.version(version)
    return ref


# --- features --------------------------------------------------------------------------------------------------
def _view_schemas(config: Config, storage: Storage) -> dict[str, dict[str, str]]:
    """Each view's (and attribute table's) columns and Feast types, from the Feast objects of the config."""
    from kfloop.feature_repo.store import objects_for

    return {
        v.name: {f.name: str(f.dtype) for f in [*v.entity_columns, *v.schema]}
        for v in objects_for(config, storage).views
    }


def view_names(config: Config) -> list[str]:
    """The feature views and attribute tables, whose offline tables feed the training set."""
    return [v.name for v in config.features.views] + [t.name for t in config.features.tables]


@_step("features")
def _features(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    inputs = [_clean_input(config, storage)]
    inputs += [_ws(config, layout.dataset_prefix(layout.clean_dataset(t.name))) for t in config.features.tables]
    if result is None:
        return inputs, []
    schemas = _view_schemas(config, storage)
    outputs = [
        _ws(
            config,
            layout.offline_key(u.view),
            facets={"schema": facets.schema(schemas.get(u.view, {}))},
            output_facets={"outputStatistics": facets.output_statistics(u.rows_added)},
        )
        for u in result
    ]
    return inputs, outputs


def online_name(view: str) -> str:
    """The online store's table of a view, as a dataset name (not a workspace key: Redis or SQLite holds it)."""
    return f"{layout.FEAST_DIR}/online/{view}"


@_step("materialize")
def _materialize(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    inputs = [_ws(config, layout.offline_key(v)) for v in view_names(config)]
    if result is None:
        return inputs, []
    stats = {m.view: facets.output_statistics(m.rows_written) for m in result}
    return inputs, [_ws(config, online_name(v), output_facets={"outputStatistics": s}) for v, s in stats.items()]


@_step("training_set")
def _training_set(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    views = [_ws(config, layout.offline_key(v)) for v in view_names(config)]
    if result is None:
        return [*views, _clean_input(config, storage)], []
    schemas = _view_schemas(config, storage)
    full = config.features.naming == "full"
    types = {(f"{v}__{c}" if full else c): t for v, cols in schemas.items() for c, t in cols.items()}
    source = {f.name: str(f.type) for f in arrow_schema(config.source)}
    columns = [*config.source.entity_keys, config.source.timestamp_column, *result.request_features]
    columns += [*result.features, result.label]
    out = _ws(
        config,
        layout.training_set_prefix(result.feature_service),
        facets={
            "schema": facets.schema({c: source.get(c) or types.get(c, "unknown") for c in dict.fromkeys(columns)}),
            "version": facets.version(result.run_id),
        },
        output_facets={"outputStatistics": facets.output_statistics(sum(result.rows.values()), len(result.rows))},
    )
    return [*views, _clean_input(config, storage, result.input_content_hash)], [out]


# --- models ----------------------------------------------------------------------------------------------------
def model_dataset(config: Config, card: dict, stage: str | None = None) -> DatasetRef:
    """A registered model version as a dataset: the registry prefix, versioned, with the model version facet."""
    model = facets.model_version(
        card["model"],
        card["version"],
        stage,
        (card.get("training_set") or {}).get("run_id"),
        (card.get("identity") or {}).get("key"),
        bool(card.get("reused")),
    )
    return _ws(
        config,
        layout.registry_prefix(card["model"]),
        facets={"version": facets.version(card["version"]), "kfloop_modelVersion": model},
    )


def _versioned(config: Config, key: str, version: str | None) -> DatasetRef:
    """A workspace dataset, with the version facet when the version is known."""
    ref = _ws(config, key)
    if version:
        ref.facets["version"] = facets.version(version)
    return ref


def _training_set_input(config: Config, run_id: str | None) -> DatasetRef:
    return _versioned(config, layout.training_set_prefix(config.features.service), run_id)


@_step("train")
def _train(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    if result is None:
        latest = _latest_training_set(storage, config)
        return [_training_set_input(config, latest)], []
    run_id = (result.get("training_set") or {}).get("run_id")
    return [_training_set_input(config, run_id)], [model_dataset(config, result, "candidate")]


def _latest_training_set(storage: Storage, config: Config) -> str | None:
    try:
        return json.loads(storage.read_text(layout.latest_key(layout.training_set_prefix(config.features.service))))[
            "run_id"
        ]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _registry_ref(config: Config, version: str | None) -> DatasetRef:
    return _versioned(config, layout.registry_prefix(config.training.model_name), version)


@_step("evaluate")
def _evaluate(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    candidate = _registry_ref(config, args.get("version"))
    if result is None:
        return [candidate], []
    test = _training_set_input(config, (result.get("test_split") or {}).get("training_set"))
    decision = _ws(config, layout.decision_key(config.training.model_name, result["version"]))
    return [candidate, test], [decision, _registry_ref(config, result.get("champion_after"))]


@_step("deploy")
def _deploy(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    if result is None:
        return [_registry_ref(config, None)], []
    served = DatasetRef(f"kserve://{config.cluster.namespace}", config.training.model_name)
    if result.get("version"):
        served.facets["version"] = facets.version(result["version"])
    return [_registry_ref(config, result.get("version"))], [served] if result.get("action") != "none" else []


@_step("report")
def _report(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    model = config.training.model_name
    inputs = [_registry_ref(config, None), _ws(config, layout.monitoring_prefix(model))]
    if result is None:
        return inputs, []
    return inputs, [_ws(config, layout.periodic_report_prefix(model))]


# --- monitoring ------------------------------------------------------------------------------------------------
@_step("drift_check")
def _drift_check(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    model = config.training.model_name
    log = _ws(config, layout.inference_log_prefix(config.serving.inference_log.prefix, model))
    if result is None:
        return [log], []
    served = _registry_ref(config, result["model_version"])
    check = _ws(config, layout.drift_checks_prefix(model), facets={"version": facets.version(result["check_id"])})
    rows = (result.get("window") or {}).get("rows")
    if isinstance(rows, int):
        log.input_facets["dataQualityMetrics"] = facets.row_count(rows)
    return [log, served], [check]


@_step("retrain_decision")
def _retrain(config: Config, storage: Storage, args: Mapping[str, Any], result: Any) -> tuple[list, list]:
    record = args.get("record") or {}
    model = config.training.model_name
    check = _ws(config, layout.drift_checks_prefix(model))
    if record.get("check_id"):
        check.facets["version"] = facets.version(str(record["check_id"]))
    if result is None:
        return [check], []
    from kfloop.monitoring.retrain import AUDIT_KIND

    decision = _ws(config, layout.audit_kind_prefix(AUDIT_KIND))
    if result.get("audit_id"):
        decision.facets["version"] = facets.version(str(result["audit_id"]))
    return [check], [decision]
