"""One drift check of the served champion, end to end: what ``kfloop monitor check`` runs.

Reads the champion and its reference profile from the registry (checksum verified), the window of the
inference log, runs the pure core (:mod:`kfloop.monitoring.check`) and the contract on the window
(:mod:`kfloop.monitoring.quality`), and writes the verdict record and its metrics under
``monitoring/<model>/`` (``checks/<id>.json`` and ``.prom``, and the newest as ``latest.json`` and
``latest.prom``), and, when the window was tested, Evidently's snapshot and HTML report of it
(``evidently/<id>.json`` and ``.html``, :mod:`kfloop.monitoring.evidently_outputs`).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from kfloop import layout
from kfloop.config import Config
from kfloop.errors import CorruptModelError, ModelNotFoundError, NoChampionError
from kfloop.lineage.run import emits
from kfloop.monitoring.check import drift_verdict
from kfloop.monitoring.columns import monitored_frame
from kfloop.monitoring.metrics import render_metrics
from kfloop.monitoring.profile import ReferenceProfile, profile_from_bytes
from kfloop.monitoring.quality import window_quality
from kfloop.monitoring.window import read_window
from kfloop.registry import ModelRegistry, ModelVersion
from kfloop.storage import Storage


def load_reference(registry: ModelRegistry, champion: ModelVersion) -> tuple[ReferenceProfile, dict]:
    """The version's profile (checksum verified) and its card entry."""
    entry = (champion.card.get("lineage") or {}).get("reference_profile")
    if not entry:
        raise ModelNotFoundError(
            f"model {registry.model!r} {champion.version} has no reference profile (registered before drift "
            "monitoring): retrain it, or promote a version trained since"
        )
    data = registry.read_file(champion.version, entry["file"])
    try:
        return profile_from_bytes(data), entry
    except Exception as err:  # a file that verified but does not parse: written by another kfloop
        raise CorruptModelError(
            f"{registry.model} {champion.version}: {entry['file']} is not a reference profile ({err})"
        ) from err


@emits("drift_check")
def run_check(config: Config, storage: Storage, now: datetime | None = None) -> dict:
    """Check the champion's newest window, store the verdict record and metrics; returns the record."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    model = config.training.model_name
    registry = ModelRegistry(storage, model)
    champion = registry.champion()
    if champion is None:
        raise NoChampionError(f"model {model!r} has no champion: nothing is served, so nothing to check")
    profile, entry = load_reference(registry, champion)
    window = read_window(storage, config, champion.version, now)
    logged = window.table.to_pandas()
    numeric = [c for c, p in profile.columns.items() if p.kind == "numeric" and c in logged.columns]
    categorical = [c for c, p in profile.columns.items() if p.kind == "categorical" and c in logged.columns]
    frame = monitored_frame(logged, numeric, categorical)
    check_id = f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"  # sortable by check time (to the µs: checks race)
    drift = drift_verdict(config.monitoring, profile, frame, entry["prediction"]["column"])
    record = {
        "check_id": check_id,
        "model": model,
        "model_version": champion.version,
        "checked_at": now.isoformat(),
        "checked_at_unix": now.timestamp(),
        "verdict": drift.pop("verdict"),
        "window": {
            **window.bounds(),
            "rows_limit": config.monitoring.window.rows,
            "duration": config.monitoring.window.duration,
        },
        "reference": {k: entry.get(k) for k in ("file", "split", "rows", "split_rows", "sampled", "seed")}
        | {"training_set": (champion.card.get("training_set") or {}).get("run_id")},
        "drift": drift,
        "data_quality": window_quality(config, window.table),
    }
    if drift["columns"]:  # a tested window: Evidently's snapshot and report, and the UI workspace
        from kfloop.monitoring.evidently_outputs import write_outputs  # imports Evidently: only when needed

        record["evidently"] = write_outputs(config, storage, champion, profile, entry["prediction"], frame, record)
    store_check(storage, record)
    return record


def store_check(storage: Storage, record: dict) -> None:
    """Write a verdict record and its metrics as the check with its id, and as the newest check."""
    model, check_id = record["model"], record["check_id"]
    body = json.dumps(record, indent=2, default=str)
    metrics = render_metrics(record)
    storage.write_text(layout.drift_check_key(model, check_id, "json"), body)
    storage.write_bytes(layout.drift_check_key(model, check_id, "prom"), metrics)
    storage.write_text(layout.latest_key(layout.monitoring_prefix(model)), body)  # the newest verdict
    storage.write_bytes(layout.latest_metrics_key(model), metrics)


def read_check(storage: Storage, model: str, check_id: str | None = None) -> dict:
    """A stored verdict record: the check ``check_id``, or the newest one (FileNotFoundError if none)."""
    key = (
        layout.drift_check_key(model, check_id, "json")
        if check_id
        else layout.latest_key(layout.monitoring_prefix(model))
    )
    return json.loads(storage.read_text(key))


def check_ids(storage: Storage, model: str) -> list[str]:
    """Every stored check of ``model``, oldest first (check ids sort by check time)."""
    prefix = layout.drift_checks_prefix(model) + "/"
    return sorted(k[len(prefix) : -len(".json")] for k in storage.list(prefix) if k.endswith(".json"))
