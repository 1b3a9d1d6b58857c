"""``kfloop forget KEY=VALUE``: one entity out of every store of the workspace, reported and audited.

Order matters: the tombstone is written first, so an ingest running meanwhile either drops the entity's rows or
refuses to commit (it re-reads the tombstones under the dataset's lease); then each store is erased, atomically
per dataset or object; the audit record comes last and holds the keyed hash, never the value. A second run of the
same erasure finds nothing and changes nothing (but audits again: the operator asked twice).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kfloop import layout
from kfloop.audit import append, current_actor
from kfloop.config import Config
from kfloop.forget.online import erase_online, erase_stream_state
from kfloop.forget.reports import erase_reports
from kfloop.forget.stores import Touched, erase_dataset, erase_objects, erase_training_sets, erase_view
from kfloop.forget.target import Target, keyed_hash, parse_target, workspace_secret, write_tombstone
from kfloop.forget.workdir import erase_artifacts, scratch_workspaces, under
from kfloop.step import new_run_id
from kfloop.storage import Storage

#: The audit action of an erasure.
ACTION = "forget.erase"


@dataclass
class ForgetReport:
    """What one erasure touched (or, dry, would touch), per store; and the models trained on the erased data."""

    key: str
    value_hash: str  # HMAC-SHA256 under the workspace secret (none yet on a dry run: "")
    dry_run: bool
    stores: list[Touched] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    tombstone: str | None = None
    seconds: float = 0.0

    @property
    def rows_removed(self) -> int:
        return sum(s.rows_removed for s in self.stores if s.store != "online")

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "value_hmac": self.value_hash,
            "dry_run": self.dry_run,
            "stores": [s.to_dict() for s in self.stores if s.touched],
            "trained_on_erased_data": self.models,
            "tombstone": self.tombstone,
            "seconds": self.seconds,
        }


def _datasets(config: Config, key: str) -> list[tuple[str, str | None]]:
    """Lake datasets that hold the key column: the source, and attribute tables keyed by it."""
    out: list[tuple[str, str | None]] = []
    if key in config.source.columns:
        out.append((config.source.dataset, config.source.timestamp_column))
    out += [(t.name, t.timestamp_column) for t in config.features.tables if t.key == key]
    return out


def _inference_log_keys(config: Config, storage: Storage) -> list[str]:
    from kfloop.serving.log_table import log_prefix

    return storage.list(log_prefix(config) + "/")


def trained_on(config: Config, storage: Storage, runs: list[str]) -> list[dict]:
    """Registered versions whose training set is one of ``runs``, with their lineage (training set → version)."""
    from kfloop.registry import ModelRegistry

    if not runs:
        return []
    model = config.training.model_name
    if not storage.list(layout.registry_prefix(model) + "/"):
        return []
    out = []
    for version in ModelRegistry(storage, model).list():
        ts = version.card.get("training_set", {})
        if ts.get("run_id") in runs:
            out.append(
                {
                    "model": model,
                    "version": version.version,
                    "stage": version.stage,
                    "training_set_run": ts["run_id"],
                    "training_set": ts.get("prefix"),
                    "feature_service": version.card.get("feature_service", {}).get("name"),
                    "pipeline_run": version.card.get("pipeline_run") or None,
                }
            )
    return out


def _erase_lake_side(
    config: Config, storage: Storage, target: Target, run_id: str, tmp: Path, dry_run: bool
) -> list[Touched]:
    """Raw and clean lake datasets, their quarantine and their quality reports."""
    out = []
    for dataset, ts in _datasets(config, target.key):
        for name, ts_col in ((dataset, ts), (layout.clean_dataset(dataset), ts)):
            out.append(erase_dataset(storage, name, target, ts_col, run_id, tmp, dry_run))
        for prefix in (
            layout.quarantine_prefix(dataset),
            layout.quarantine_prefix(dataset + "_contract"),
            layout.too_late_prefix(dataset),
        ):
            keys = storage.list(prefix + "/")
            out.append(erase_objects(storage, "quarantine", prefix, keys, target, tmp, dry_run)[0])
        out.append(erase_reports(storage, dataset, target, dry_run))
    return out


def forget(
    config: Config,
    storage: Storage,
    key_value: str | Target,
    *,
    environ: Mapping[str, str],
    dry_run: bool = False,
    actor: str | None = None,
) -> ForgetReport:
    """Erase the entity ``KEY=VALUE`` from every store (see the module docstring); ``dry_run`` changes nothing."""
    t0 = time.perf_counter()
    target = key_value if isinstance(key_value, Target) else parse_target(config, key_value)
    who = actor or current_actor()
    secret = workspace_secret(storage, create=not dry_run)
    digest = keyed_hash(secret, target.key, target.text) if secret is not None else ""
    report = ForgetReport(target.key, digest, dry_run)
    if not dry_run:
        write_tombstone(storage, target, digest, who)
        report.tombstone = storage.uri(layout.tombstone_key(digest))
    run_id = new_run_id()
    with tempfile.TemporaryDirectory(prefix="kfloop-forget-") as tmp_dir:
        tmp = Path(tmp_dir)
        report.stores += _erase_lake_side(config, storage, target, run_id, tmp, dry_run)
        report.stores.append(erase_artifacts(storage, target, tmp, dry_run))
        for prefix, scratch in scratch_workspaces(storage):
            stores = _erase_lake_side(config, scratch, target, run_id, tmp, dry_run)
            report.stores += [under(prefix, s) for s in stores]
        from kfloop.feature_repo.definitions import view_keys

        for view, join_key in view_keys(config).items():
            if join_key == target.key:
                report.stores.append(erase_view(storage, view, target, run_id, tmp, dry_run))
        report.stores.append(erase_online(config, storage, target, environ, dry_run))
        report.stores.append(erase_stream_state(config, target, environ, dry_run))
        log_keys = _inference_log_keys(config, storage)
        report.stores.append(
            erase_objects(storage, "inference_log", config.training.model_name, log_keys, target, tmp, dry_run)[0]
        )
        touched, runs = erase_training_sets(storage, config.features.service, target, tmp, dry_run)
        report.stores.append(touched)
    report.models = trained_on(config, storage, runs)
    report.seconds = round(time.perf_counter() - t0, 3)
    if not dry_run:
        subject = {"entity_key": target.key, "value_hmac": digest}
        details = {
            "hash": "HMAC-SHA256 of key and value under the workspace secret (forget/secret.key)",
            "stores": [
                {k: v for k, v in s.to_dict().items() if k not in ("files_rewritten", "files_deleted")}
                | {"files_rewritten": len(s.files_rewritten), "files_deleted": len(s.files_deleted)}
                for s in report.stores
                if s.touched
            ],
            "trained_on_erased_data": [f"{m['model']}:{m['version']}" for m in report.models],
        }
        append(storage, ACTION, subject, details, actor=who)
    return report
