"""What the catalog lists, read from the config and the workspace: one JSON-ready record.

Every object carries the same fields, so a reader (a person, a data-governance tool reading the JSON) compares
like with like: ``name``, ``kind``, ``owner`` (its own from the config, else the project's ``owner``, and
``owner_inherited`` says which), ``description``, ``schema`` (column → type), ``freshness`` (the newest data it
holds and when it last changed) and ``quality`` (a score, and where it comes from; null when nothing measures it).
Nothing here writes: the workspace is read as the stages left it (lake manifests, quality reports, the features'
state and freshness samples, registry cards, stages and gate decisions).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake, layout
from kfloop.config import Config
from kfloop.config.training import COMPARABLE
from kfloop.report.collect import id_time
from kfloop.schema import arrow_schema
from kfloop.storage import Storage

__all__ = ["collect"]


def _owner(config: Config, own: str | None) -> dict[str, Any]:
    return {"owner": own or config.owner, "owner_inherited": own is None}


def _quality_report(storage: Storage, dataset: str) -> dict | None:
    """The dataset's newest data-quality report, as its score (``latest.json``), or None before any validation."""
    try:
        body = json.loads(storage.read_text(layout.latest_key(layout.report_prefix(dataset))))
    except FileNotFoundError:
        return None
    return {
        "score": body.get("quality_score"),
        "gate_passed": body.get("gate_passed"),
        "run_id": body.get("run_id"),
        "measured": body.get("created"),
        "source": storage.uri(layout.report_key(dataset, str(body.get("run_id")), "html")),
    }


def _lake_entry(storage: Storage, name: str, kind: str, declared: dict[str, str], quality: dict | None) -> dict:
    manifest = lake.read_manifest(storage, name)
    last = manifest.runs[-1] if manifest and manifest.runs else {}
    changed = last.get("finished") or (t.isoformat() if (t := id_time(str(last.get("run_id", "")))) else None)
    return {
        "name": name,
        "kind": kind,
        "location": storage.uri(layout.dataset_prefix(name)),
        "schema": manifest.schema if manifest else declared,
        "rows": manifest.rows if manifest else 0,
        "files": len(manifest.files) if manifest else 0,
        "freshness": {
            "oldest_event": manifest.min_event_time if manifest else None,
            "newest_event": manifest.watermark if manifest else None,
            "last_change": changed,
        },
        "quality": quality,
    }


def _quarantine_entry(storage: Storage, name: str, of: str) -> dict | None:
    """Quarantined rows under ``quarantine/<name>/`` (one Parquet file per run), or None when there are none."""
    keys = sorted(k for k in storage.list(layout.quarantine_prefix(name) + "/") if k.endswith(".parquet"))
    if not keys:
        return None
    rows, schema = 0, {}
    for key in keys:
        meta = pq.read_metadata(pa.BufferReader(storage.read_bytes(key)))
        rows += meta.num_rows
        schema = {f.name: str(f.type) for f in meta.schema.to_arrow_schema()}  # the newest file's
    newest = id_time(keys[-1].rsplit("/", 1)[-1])
    return {
        "name": name,
        "kind": "quarantine",
        "of": of,
        "location": storage.uri(layout.quarantine_prefix(name)),
        "schema": schema,
        "rows": rows,
        "files": len(keys),
        "freshness": {
            "oldest_event": None,
            "newest_event": None,
            "last_change": newest.isoformat() if newest else None,
        },
        "quality": None,
    }


def _datasets(config: Config, storage: Storage) -> list[dict]:
    tables = ((t.source_config(), "attribute_table", t) for t in config.features.tables)
    sources = [(config.source, "raw", None), *tables]
    out = []
    for src, kind, table in sources:
        meta = table.source if table is not None else config.source
        who = _owner(config, meta.owner) | {"description": meta.description}
        declared = {f.name: str(f.type) for f in arrow_schema(src)}
        quality = _quality_report(storage, src.dataset)
        out.append(who | _lake_entry(storage, src.dataset, kind, declared, quality))
        clean = layout.clean_dataset(src.dataset)
        out.append(who | _lake_entry(storage, clean, "clean", declared, quality) | {"of": src.dataset})
        for name in sorted(layout.dataset_names(src.dataset) - {clean}):
            entry = _quarantine_entry(storage, name, src.dataset)
            if entry is not None:
                out.append(who | entry)
    return out


def _feature_views(config: Config, storage: Storage, now: datetime) -> list[dict]:
    from kfloop.feature_repo.status import feature_status

    status = {s.view: s for s in feature_status(config, storage, layout.clean_dataset(config.source.dataset), now)}
    types = config.features.feature_types()
    source_quality = _quality_report(storage, config.source.dataset)
    out = []
    specs = [(v.name, v.entity, v.ttl, v.owner, v.description, config.source.dataset) for v in config.features.views]
    specs += [(t.name, t.key, t.ttl, t.source.owner, t.source.description, t.name) for t in config.features.tables]
    stored = config.features.stored_features()
    for name, entity, ttl, owner, description, source in specs:
        s = status.get(name)
        quality = source_quality if source == config.source.dataset else _quality_report(storage, source)
        out.append(
            {"name": name, "kind": "attribute_table" if source == name else "aggregates"}
            | _owner(config, owner)
            | {
                "description": description,
                "entity": entity,
                "ttl": ttl,
                "source": layout.clean_dataset(source),
                "schema": {model: types[model].value for v, _, model in stored if v == name},
                "freshness": {
                    "newest_offline": s.newest_offline if s else None,
                    "newest_online": s.newest_online if s else None,
                    "lag_seconds": s.lag_seconds if s else None,
                    "sla_seconds": s.sla_seconds if s else None,
                    "stale": s.stale if s else True,
                    "online_age_seconds": s.online_age_seconds if s else None,
                },
                "quality": None if quality is None else quality | {"of": source},
            }
        )
    return out


def _service(config: Config, views: list[dict]) -> dict:
    """The feature service: as fresh as its stalest view; no quality of its own (its views carry their sources')."""
    online = [v["freshness"]["newest_online"] for v in views]
    return {
        "name": config.features.service,
        "kind": "feature_service",
        **_owner(config, None),
        "description": f"The stored features {config.training.model_name} takes (Feast feature service).",
        "views": [v["name"] for v in views],
        "schema": {n: t.value for n, t in config.features.feature_types().items()},
        "freshness": {
            "newest_online": None if None in online else min(online, default=None),
            "stale_views": [v["name"] for v in views if v["freshness"]["stale"]],
        },
        "quality": None,
    }


def _decision(storage: Storage, model: str, version: str) -> dict:
    try:
        body = json.loads(storage.read_text(layout.decision_key(model, version)))
    except (FileNotFoundError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _models(config: Config, storage: Storage) -> list[dict]:
    from kfloop.registry import ModelRegistry

    model, task = config.training.model_name, config.training.task
    metric = config.training.gate.compared(task)
    versions = []
    for mv in ModelRegistry(storage, model).list():
        decision = _decision(storage, model, mv.version)
        test = (decision.get("candidate") or {}).get(metric)
        validation = ((mv.card.get("metrics") or {}).get("validation") or {}).get(metric)
        score, split = (test, "test") if test is not None else (validation, "validation")
        versions.append(
            {
                "version": mv.version,
                "stage": mv.stage,
                "registered": mv.card.get("registered"),
                "training_set": (mv.card.get("training_set") or {}).get("run_id"),
                "features": mv.card.get("features"),
                "quality": None if score is None else {"metric": metric, "split": split, "score": score},
            }
        )
    champion = next((v for v in versions if v["stage"] == "champion"), None)
    request = {c: config.source.columns[c].value for c in config.features.request_features}
    return [
        {"name": model, "kind": "model"}
        | _owner(config, config.training.owner)
        | {
            "description": config.training.description,
            "task": task,
            "framework": config.training.framework,
            "location": storage.uri(layout.registry_prefix(model)),
            "schema": {n: t.value for n, t in config.features.feature_types().items()} | request,
            "champion": champion["version"] if champion else None,
            "freshness": {"last_change": max((v["registered"] or "" for v in versions), default=None) or None},
            "quality": champion["quality"] if champion else None,
            "higher_is_better": COMPARABLE[task][metric],
            "versions": versions,
        }
    ]


def collect(config: Config, storage: Storage, now: datetime | None = None) -> dict[str, Any]:
    """The catalog of ``config``'s project as the workspace holds it ``now``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "project": config.project,
        "owner": config.owner,
        "workspace": storage.uri(""),
        "created": now.isoformat(),
        "datasets": _datasets(config, storage),
        "feature_views": (views := _feature_views(config, storage, now)),
        "feature_services": [_service(config, views)],
        "models": _models(config, storage),
    }
