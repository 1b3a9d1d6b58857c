"""The pipeline's KFP components: one thin wrapper per stage, and the quality gate.

Each wrapper's body runs in the project image: it imports its stage's ``run_*_step`` entrypoint there
(the import is inside the body because kfp serializes only the function's source) and turns the result
into KFP artifacts and metrics the Kubeflow UI renders. The stage cores (``kfloop.components.*``) stay free
of kfp, so a stage runs, and ``kfloop ingest`` starts, without it; only this module and the pipeline
modules need the kfp SDK.
"""

# No `from __future__ import annotations` here: kfp reads the component signatures at decoration time.
from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

__all__ = [
    "config_component",
    "deploy_component",
    "evaluate_component",
    "features_component",
    "gate_component",
    "ingest_component",
    "materialize_component",
    "train_component",
    "training_set_component",
    "validate_component",
]


def config_component(
    config_json: str,
    defaults_json: str,
    framework: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    early_stopping_patience: int,
    seed: int,
    threshold_target: float,
    gate_tolerance: float,
    training_window: str,
) -> str:
    """KFP step (the first): the run form's parameters applied to the config and validated by the config
    model; every later step reads the config it returns (see ``kfloop.config.run_parameters``)."""
    from kfloop.config.run_parameters import resolve_step

    values = {
        "framework": framework,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "early_stopping_patience": early_stopping_patience,
        "seed": seed,
        "threshold_target": threshold_target,
        "gate_tolerance": gate_tolerance,
        "training_window": training_window,
    }
    return resolve_step(config_json, defaults_json, values)


def ingest_component(
    config_json: str,
    source_uri: str,
    run_manifest: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    table: str = "",
):
    """KFP step: ingest the source into the lake (body runs in the project image; see ``run_ingest_step``).
    ``table``: an attribute table of ``features.tables`` ("" = the main source); ``source_uri`` is then its file."""
    from kfloop.components.ingest import run_ingest_step

    result = run_ingest_step(config_json, source_uri, run_manifest.path, quarantine.path, table)
    counts = ("rows_read", "rows_written", "rows_quarantined", "rows_skipped", "rows_late", "rows_too_late")
    for key in (*counts, "dataset_rows", "files"):
        metrics.log_metric(key, getattr(result, key))
    run_manifest.metadata.update(
        {
            "dataset": result.dataset,
            "watermark": result.watermark_after or "",
            "rows": result.dataset_rows,
            "content_hash": result.content_hash,
            "schema_hash": result.schema_hash,
            "manifest": result.manifest_uri,
        }
    )
    quarantine.metadata["rows"] = result.rows_quarantined


def validate_component(
    config_json: str,
    ingest_manifest: Input[Dataset],
    report: Output[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    clean: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    table: str = "",
) -> NamedTuple("GateDecision", [("passed", bool), ("message", str)]):
    """KFP step: enforce the data contract; the quality report shows in the Kubeflow UI. ``table``: an attribute
    table of ``features.tables`` under its own contract ("" = the main source)."""
    from collections import namedtuple

    from kfloop.components.validate import run_validate_step

    result = run_validate_step(config_json, report.path, quarantine.path, clean.path, table)
    rep = result.report
    with open(report_html.path, "w") as fh:
        fh.write(result.html)
    with open(report_md.path, "w") as fh:
        fh.write(result.markdown)
    metrics.log_metric("quality_score", rep.quality_score)
    metrics.log_metric("completeness", round(1.0 - rep.metric("completeness"), 6))
    metrics.log_metric("duplicate_rate", round(rep.metric("duplicates"), 6))
    metrics.log_metric("rows_in", rep.rows_in)
    metrics.log_metric("rows_out", rep.rows_clean)
    metrics.log_metric("rows_quarantined", rep.rows_quarantined)
    clean.metadata.update({"rows": rep.rows_clean, "manifest": result.clean_manifest_uri or ""})
    quarantine.metadata["rows"] = rep.rows_quarantined
    return namedtuple("GateDecision", ["passed", "message"])(rep.gate_passed, rep.gate_message())


def gate_component(passed: bool, message: str, table: str = ""):
    """KFP step: stop the pipeline before any training when an `error` check failed (``table``: whose contract,
    "" = the main source's)."""
    where = f" on table {table}" if table else ""
    if not passed:
        raise RuntimeError(f"data contract gate failed{where}:\n" + message)
    print(f"data contract gate passed{where}")


def features_component(config_json: str, metrics: Output[Metrics]) -> str:
    """KFP step: compute the offline feature tables (Feast sources) from the clean dataset."""
    import json

    from kfloop.components.features import run_features_step

    updates = run_features_step(config_json)
    for u in updates:
        metrics.log_metric(f"{u['view']}_rows_added", u["rows_added"])
        metrics.log_metric(f"{u['view']}_rows_removed", u["rows_removed"])
        metrics.log_metric(f"{u['view']}_offline_rows", u["offline_rows"])
    return json.dumps(updates)


def materialize_component(config_json: str, metrics: Output[Metrics]) -> str:
    """KFP step: feast apply + incremental materialization; rows written, duration and lag as Metrics."""
    import json

    from kfloop.components.materialize import run_materialize_step

    results = run_materialize_step(config_json)
    for r in results:
        metrics.log_metric(f"{r['view']}_rows_written", r["rows_written"])
        metrics.log_metric(f"{r['view']}_rows_deleted", r["rows_deleted"])
        metrics.log_metric(f"{r['view']}_seconds", r["seconds"])
        metrics.log_metric(f"{r['view']}_lag_seconds", r["lag_seconds"])
    return json.dumps(results)


def training_set_component(config_json: str, training_set: Output[Dataset], metrics: Output[Metrics]) -> None:
    """KFP step: point-in-time-correct training set with train/validation/test splits."""
    import json

    from kfloop.components.training_set import run_training_set_step

    result = run_training_set_step(config_json)
    with open(training_set.path, "w") as fh:
        json.dump(result, fh, indent=2)
    for key in ("prefix", "feature_service", "feature_service_version", "content_hash"):
        training_set.metadata[key] = result[key]
    for name, n in result["rows"].items():
        metrics.log_metric(f"{name}_rows", n)
    metrics.log_metric("unlabeled_rows_dropped", result["unlabeled_rows_dropped"])


def train_component(config_json: str, pipeline_run: str, model: Output[Model], metrics: Output[Metrics]) -> str:
    """KFP step: train (PyTorch or TensorFlow per config), export, register a candidate version."""
    import json

    from kfloop.components.train import run_train_step

    card = run_train_step(config_json, pipeline_run)
    with open(model.path, "w") as fh:
        json.dump(card, fh, indent=2, default=str)
    reused = bool(card.get("reused"))  # same identity as a registered version: returned, not trained again
    model.metadata.update(
        {"version": card["version"], "framework": card["framework"], "model": card["model"], "reused": reused}
    )
    for key, value in card["metrics"]["validation"].items():
        if isinstance(value, int | float):
            metrics.log_metric(f"validation_{key}", value)
    return card["version"]


def evaluate_component(
    config_json: str,
    version: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    decision: Output[Markdown],
) -> str:
    """KFP step: test metrics, ROC curve and confusion matrix, champion comparison and promotion."""
    from kfloop.components.evaluate import decision_markdown, run_evaluate_step

    d = run_evaluate_step(config_json, version)
    for key, value in d["candidate"].items():
        metrics.log_metric(f"test_{key}", value)
    metrics.log_metric("promoted", 1 if d["promoted"] else 0)
    c = d["curves"]
    if c is not None and "fpr" in c:  # binary: ROC curve and confusion matrix
        classification.log_roc_curve(c["fpr"], c["tpr"], c["thresholds"])
        classification.log_confusion_matrix(["legit", "fraud"], c["confusion_matrix"])
    elif c is not None:  # multiclass: the confusion matrix over its classes; a regressor has Metrics only
        classification.log_confusion_matrix(c["classes"], c["confusion_matrix"])
    with open(decision.path, "w") as fh:
        fh.write(decision_markdown(d))
    return d["champion_after"] or ""


def deploy_component(config_json: str, champion: str) -> str:
    """KFP step: serve the registry's champion (KServe on a cluster; a no-op that a local server follows)."""
    import json

    from kfloop.components.deploy import run_deploy_step

    return json.dumps(run_deploy_step(config_json, champion))
