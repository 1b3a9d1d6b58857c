"""Train stage: the latest training set → a trained, exported model registered as a candidate.

The card (``model.json``) records what the model is and where it came from: framework and versions,
hyperparameters, validation metrics and threshold, the training set (content hash, time range), the
feature service and its version, the pipeline run, and ``lineage``: the quality report of the validate run
that produced the data it was trained on (``reports/<dataset>/quality/<run_id>.json``, never the moving
``latest.json``) and the contract as an object (``hash`` of its canonical JSON, ``checks`` run,
``schema_hash`` of the clean data), and ``reference_profile``: the file the drift check compares served
traffic with (the train split's inputs and the model's predictions on them; see kfloop.monitoring.reference).

Training the same thing twice is not done: ``identity`` (on the card) is a key over the training set's
content hash, the label, the model inputs, every training setting that shapes the model, and the code
versions. Training is seeded and deterministic on CPU, so an equal key would train an equal model: the
version that has it is returned instead, marked ``reused``.
"""

import hashlib
import json
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import kfloop
from kfloop import lake, layout
from kfloop.config import Config
from kfloop.config._base import METADATA_FIELDS
from kfloop.lineage.run import emits
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage
from kfloop.training.base import package_versions
from kfloop.training.preprocess import feature_columns
from kfloop.training.sets import latest_training_set, load_split


def contract_hash(config: Config) -> str:
    """sha256 of the contract's canonical JSON (sorted keys, no spaces): equal hashes, equal rules."""
    body = json.dumps(config.contract.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _lineage(config: Config, storage: Storage, manifest: dict) -> dict:
    """The quality report of the validate run whose clean data the training set read, and the contract.

    The training set records both; one written before it did is matched to the clean dataset only when
    the content hashes agree (otherwise newer data was validated since, and its report is not ours).
    """
    report, schema_hash = manifest.get("quality_report"), manifest.get("schema_hash")
    if report is None:
        clean = lake.read_manifest(storage, layout.clean_dataset(config.source.dataset))
        if clean is not None and clean.runs and clean.content_hash == manifest.get("input_content_hash"):
            report, schema_hash = clean.runs[-1].get("report"), clean.schema_hash
    checks = None
    if report is not None:
        try:
            checks = len(json.loads(storage.read_text(report))["checks"])
        except (FileNotFoundError, ValueError, KeyError):
            checks = None
    contract = {"hash": contract_hash(config), "checks": checks, "schema_hash": schema_hash or None}
    return {"quality_report": report, "contract": contract}


def training_identity(config: Config, manifest: dict) -> dict:
    """``{"key": sha256, "code": versions}``: equal keys, equal models. The gate is left out (it judges a model,
    it does not make one); the framework's versions are read without importing it."""
    numeric, categorical = feature_columns(config)
    code = {"kfloop": kfloop.__version__, **package_versions(config.training.framework)}
    parts = {
        "training_set": manifest["content_hash"],
        "label": config.source.label_column,
        "inputs": {"numeric": numeric, "categorical": categorical},
        "training": config.training.model_dump(mode="json", exclude={"gate", *METADATA_FIELDS}),
        "code": code,
    }
    body = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return {"key": hashlib.sha256(body.encode()).hexdigest(), "code": code}


@emits("train")
def train_and_register(config: Config, storage: Storage, pipeline_run: str = "") -> dict:
    """Train on the latest training set, export, register a candidate; returns its card (or the card of the
    version with the same identity, with ``reused: True``)."""
    from kfloop.monitoring.reference import write_reference_profile
    from kfloop.training.trainer import export, train

    manifest = latest_training_set(config, storage)
    registry = ModelRegistry(storage, config.training.model_name)
    hyperparameters = config.training.model_dump(mode="json", exclude={"gate", "threshold", *METADATA_FIELDS})
    threshold_rule = config.training.threshold.model_dump()
    identity = training_identity(config, manifest)
    for previous in reversed(registry.list()):  # same identity: the same model again (idempotent)
        if previous.card.get("identity", {}).get("key") == identity["key"]:
            return {**previous.card, "reused": True}
    splits = {name: load_split(storage, manifest, name) for name in layout.SPLITS[:2]}
    model = train(config, splits["train"], splits["validation"])
    card = {
        "framework": config.training.framework,
        "task": config.training.task,
        "versions": {"kfloop": kfloop.__version__, "python": platform.python_version(), **model.versions},
        "hyperparameters": hyperparameters,
        "threshold": model.threshold,
        "threshold_rule": threshold_rule,
        "calibration": {  # training.calibration and what it fitted (auto resolved); errors before/after in metrics
            "setting": config.training.calibration,
            "method": model.calibrator.method if model.calibrator is not None else "none",
        },
        "identity": identity,
        "metrics": {"validation": model.metrics},
        "history": model.history,
        "features": {"numeric": model.preprocessor.numeric, "categorical": model.preprocessor.categorical},
        "label": config.source.label_column,
        "training_set": {
            k: manifest[k] for k in ("run_id", "prefix", "content_hash", "time_range", "rows", "input_content_hash")
        },
        "feature_service": {"name": manifest["feature_service"], "version": manifest["feature_service_version"]},
        "lineage": _lineage(config, storage, manifest),
        "pipeline_run": pipeline_run,
        "created": datetime.now(UTC).isoformat(),
        **({"classes": model.classes} if model.classes is not None else {}),  # multiclass: output k's class
    }
    with tempfile.TemporaryDirectory(prefix="kfloop-model-") as tmp:
        export(model, Path(tmp))
        card["lineage"]["reference_profile"] = write_reference_profile(  # the drift check's reference
            config, splits["train"], model.predict, Path(tmp), model.classes
        )
        version = registry.register(Path(tmp), card)
    return version.card


def run_train_step(config_json: str, pipeline_run: str) -> dict:
    """Entrypoint inside the pipeline step; a plain dict, so the component body needs no imports."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return train_and_register(config, storage, pipeline_run)
