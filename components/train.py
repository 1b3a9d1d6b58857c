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

With ``training.workers`` > 1 the step trains in that many processes (PyTorch DDP): a Kubeflow Training Operator
PyTorchJob when it runs in a pod with an S3 workspace (``kfloop.kube.train_job``), else local processes
(``kfloop.training.launch``). Each process runs this module's ``main`` (``python -m kfloop.components.train``)
on the training set the step chose; rank 0 registers, and the step returns the card registered under the
model's identity.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import kfloop
from kfloop import lake, layout
from kfloop.config import Config, TrainingConfig, config_to_json
from kfloop.config._base import METADATA_FIELDS
from kfloop.errors import PipelineError
from kfloop.lineage.run import emits
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage
from kfloop.training import distributed
from kfloop.training.base import package_versions
from kfloop.training.preprocess import feature_columns
from kfloop.training.sets import latest_training_set, load_split, training_set

#: Training settings that enter a model's identity only when changed from their defaults.
_SET_ONLY = ("workers", "device")


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


def _shaping_settings(config: Config) -> dict:
    """The training settings that shape the model. ``job_timeout_minutes`` only bounds a run; ``workers`` and
    ``device`` count only when set: a single CPU process trains what it did before they existed, so its key
    stays the same."""
    settings = config.training.model_dump(mode="json", exclude={"gate", "job_timeout_minutes", *METADATA_FIELDS})
    for key in _SET_ONLY:
        if settings[key] == TrainingConfig.model_fields[key].default:
            del settings[key]
    return settings


def training_identity(config: Config, manifest: dict) -> dict:
    """``{"key": sha256, "code": versions}``: equal keys, equal models. The gate is left out (it judges a model,
    it does not make one); the framework's versions are read without importing it."""
    numeric, categorical = feature_columns(config)
    code = {"kfloop": kfloop.__version__, **package_versions(config.training.framework)}
    parts = {
        "training_set": manifest["content_hash"],
        "label": config.source.label_column,
        "inputs": {"numeric": numeric, "categorical": categorical},
        "training": _shaping_settings(config),
        "code": code,
    }
    body = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return {"key": hashlib.sha256(body.encode()).hexdigest(), "code": code}


@emits("train")
def train_and_register(
    config: Config, storage: Storage, pipeline_run: str = "", environ: Mapping[str, str] | None = None
) -> dict:
    """Train on the latest training set, export, register a candidate; returns its card (or the card of the
    version with the same identity, with ``reused: True``). With ``training.workers`` > 1 the training runs in
    that many processes (``_train_distributed``); ``environ`` (the step's) tells whether they can be a
    PyTorchJob."""
    manifest = latest_training_set(config, storage)
    registry = ModelRegistry(storage, config.training.model_name)
    identity = training_identity(config, manifest)
    previous = _registered(registry, identity["key"])
    if previous is not None:  # same identity: the same model again (idempotent)
        return {**previous, "reused": True}
    if config.training.workers > 1:
        return _train_distributed(config, storage, manifest, identity, pipeline_run, environ or {})
    card = _train(config, storage, manifest, identity, pipeline_run)
    if card is None:
        raise PipelineError(
            "training.workers is 1 but this process is a non-zero rank of a process group: run distributed "
            "training through `python -m kfloop.components.train`"
        )
    return card


def _registered(registry: ModelRegistry, key: str) -> dict | None:
    """The card of the newest version with identity ``key``, if any."""
    for previous in reversed(registry.list()):
        if previous.card.get("identity", {}).get("key") == key:
            return previous.card
    return None


def _train(config: Config, storage: Storage, manifest: dict, identity: dict, pipeline_run: str) -> dict | None:
    """Train on ``manifest``'s splits here (this process's share, in a process group), then export and register
    on rank 0; other ranks return None."""
    from kfloop.monitoring.reference import write_reference_profile
    from kfloop.training.trainer import export, train

    registry = ModelRegistry(storage, config.training.model_name)
    hyperparameters = config.training.model_dump(mode="json", exclude={"gate", "threshold", *METADATA_FIELDS})
    threshold_rule = config.training.threshold.model_dump()
    splits = {name: load_split(storage, manifest, name) for name in layout.SPLITS[:2]}
    model = train(config, splits["train"], splits["validation"])
    world = distributed.current()
    if world is not None and not world.primary:
        return None
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
        **({"distributed": _distributed_record(world)} if world is not None else {}),  # trained by several
    }
    with tempfile.TemporaryDirectory(prefix="kfloop-model-") as tmp:
        export(model, Path(tmp))
        card["lineage"]["reference_profile"] = write_reference_profile(  # the drift check's reference
            config, splits["train"], model.predict, Path(tmp), model.classes
        )
        version = registry.register(Path(tmp), card)
    return version.card


def _distributed_record(world: distributed.World) -> dict:
    """How many processes trained the model together, on which device, through which collective backend."""
    return {"processes": world.size, "device": world.device, "backend": distributed.BACKENDS[world.device]}


def _train_distributed(
    config: Config, storage: Storage, manifest: dict, identity: dict, pipeline_run: str, environ: Mapping[str, str]
) -> dict:
    """``training.workers`` processes train ``manifest``'s set (a PyTorchJob from a pod with an S3 workspace,
    else local processes) and rank 0 registers; the step returns the card it registered."""
    from kfloop.training import launch

    args = launch.worker_args(config_to_json(config), manifest["run_id"], pipeline_run)
    if launch.on_cluster(config, environ):
        from kfloop.kube import train_job

        name = train_job.job_name(config, identity["key"], pipeline_run)
        job = train_job.build_pytorch_job(config, name, train_job.job_namespace(config), args)
        where = f"PyTorchJob {job['metadata']['namespace']}/{name}"
        print(f"train: {where}, {config.training.workers} pods; waiting for it", flush=True)
        train_job.submit_and_wait(config, job)
    else:
        where = f"{config.training.workers} local processes"
        print(f"train: {where} (torchrun, gloo)", flush=True)
        launch.run_local(config, args)
    card = _registered(ModelRegistry(storage, config.training.model_name), identity["key"])
    if card is None:
        raise PipelineError(
            f"{where} finished but registered no version of {config.training.model_name!r} with identity "
            f"{identity['key'][:12]}: rank 0 ran other code or another config (is cluster.image this kfloop?)"
        )
    return card


def train_worker(config: Config, storage: Storage, training_set_id: str, pipeline_run: str) -> dict | None:
    """One process of a distributed run, in the group this process has joined: train on training set
    ``training_set_id``; rank 0 registers and returns the card, the others None."""
    manifest = training_set(config, storage, training_set_id)
    return _train(config, storage, manifest, training_identity(config, manifest), pipeline_run)


def run_train_step(config_json: str, pipeline_run: str) -> dict:
    """Entrypoint inside the pipeline step; a plain dict, so the component body needs no imports."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return train_and_register(config, storage, pipeline_run, os.environ)


def main(argv: list[str] | None = None) -> int:
    """Entrypoint of every process of a distributed run (``python -m kfloop.components.train``, started by
    torchrun or a PyTorchJob): join the process group the environment describes, train, and (rank 0) register."""
    from kfloop.step import open_step

    parser = argparse.ArgumentParser(prog="python -m kfloop.components.train", description=main.__doc__)
    parser.add_argument("--config-json", required=True, help="the whole config, as the pipeline passes it")
    parser.add_argument("--training-set", required=True, help="run id of the training set to train on")
    parser.add_argument("--pipeline-run", default="", help="the pipeline run, recorded on the card")
    args = parser.parse_args(argv)
    config, storage = open_step(args.config_json)
    with distributed.process_group(config.training.device, os.environ) as world:
        card = train_worker(config, storage, args.training_set, args.pipeline_run)
    if card is not None:
        rank = f"rank {world.rank} of {world.size}" if world is not None else "one process"
        print(f"{rank}: registered {card['model']} {card['version']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
