"""What a periodic report says, collected from the workspace: one JSON-ready record per report.

Every section reads what its stage already recorded, for the period ``[start, end)``: the lake manifest's ingest
runs and the quality reports (data volume and quality), the feature state and the freshness samples (feature
freshness), the registry's cards, stages and gate decisions (model versions), the drift checks and the retrain
audit trail (drift episodes and retrains), and the SLO status (error budgets). Records are named by time-sortable
ids, so a period is chosen by key before anything is read. A record that cannot be read is left out and named in
its section's ``problems``; an optional engine that is missing (the freshness history, the SLOs) leaves its part
``available: false`` with the reason: the report always renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kfloop import lake, layout
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.config.training import COMPARABLE
from kfloop.errors import KfloopError
from kfloop.storage import Storage

__all__ = ["MAX_POINTS", "collect", "id_time"]

#: Most points a trend keeps (a week of minute samples is 10,080): older-to-newer buckets of equal time.
MAX_POINTS = 168
#: Storage reads in flight at once (S3 round trips dominate: a week of 15-minute drift checks is 672 objects).
_READERS = 8
_ID_TIME = re.compile(r"^(\d{8}T\d{6})(\d{6})?Z")
_DRIFT, _NO_DRIFT = "drift", "no_drift"
_TOTALS = ("rows_read", "rows_written", "rows_quarantined", "rows_too_late")
T = TypeVar("T")


def id_time(record_id: str) -> datetime | None:
    """The UTC time a time-sortable id starts with (``20260105T070000Z-…`` run and report ids, ``…T070000123456Z-…``
    check and audit ids), or None for a name no stage gives."""
    m = _ID_TIME.match(record_id)
    if not m:
        return None
    return datetime.strptime(m[1] + (m[2] or "000000"), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def _in(at: datetime | None, start: datetime, end: datetime) -> bool:
    return at is not None and start <= at < end


def _when(text: object) -> datetime | None:
    """An ISO time from a record (naive ones are UTC), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _read_all(storage: Storage, keys: list[str], parse: Callable[[str], T], problems: list[str]) -> list[T]:
    """``parse`` of every key's text, in key order, read concurrently; an unreadable one is named in ``problems``."""

    def one(key: str) -> T | None:
        try:
            return parse(storage.read_text(key))
        except FileNotFoundError:
            return None  # removed since the listing
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"{storage.uri(key)}: unreadable ({type(err).__name__}: {err}); left out")
            return None

    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        return [r for r in pool.map(one, keys) if r is not None]


def _keys_in(storage: Storage, prefix: str, start: datetime, end: datetime) -> list[str]:
    """The ``<id>.json`` objects directly under ``prefix`` whose id's time is in the period, oldest first."""
    out = []
    for key in storage.list(prefix + "/"):
        name = key[len(prefix) + 1 :]
        if "/" not in name and name.endswith(".json") and _in(id_time(name), start, end):
            out.append(key)
    return sorted(out)


# --- data volume and quality ---------------------------------------------------------------------------------
def _ingest_runs(manifest: lake.Manifest | None, start: datetime, end: datetime) -> list[dict]:
    keep = ("rows_read", "rows_written", "rows_quarantined", "rows_skipped", "rows_late", "rows_too_late")
    runs = []
    for r in manifest.runs if manifest else []:
        if r.get("kind") == "retention":  # a retention trim is not an ingest run
            continue
        finished = _when(r.get("finished")) or id_time(str(r.get("run_id", "")))
        if _in(finished, start, end):
            runs.append(
                {"run_id": r.get("run_id"), "finished": finished.isoformat()} | {k: int(r.get(k) or 0) for k in keep}
            )
    return sorted(runs, key=lambda r: r["finished"])


def _quality(text: str) -> dict:
    from kfloop.contract.report import report_from_json

    rep = report_from_json(text)
    return {
        "run_id": rep.run_id,
        "created": rep.created,
        "score": rep.quality_score,
        "gate_passed": rep.gate_passed,
        "rows_in": rep.rows_in,
        "rows_clean": rep.rows_clean,
        "rows_quarantined": rep.rows_quarantined,
        "rows_dropped_duplicates": rep.rows_dropped_duplicates,
        "failed_checks": [c.check for c in rep.checks if not c.passed],
    }


def _data(config: Config, storage: Storage, start: datetime, end: datetime) -> dict:
    problems: list[str] = []
    datasets = []
    for name in [config.source.dataset, *(t.name for t in config.features.tables)]:
        try:
            manifest = lake.read_manifest(storage, name)
        except (ValueError, KeyError, TypeError, KfloopError) as err:
            problems.append(f"{storage.uri(layout.manifest_key(name))}: unreadable ({err}); its runs are left out")
            manifest = None
        prefix = layout.report_prefix(name)
        quality = _read_all(storage, _keys_in(storage, prefix, start, end), _quality, problems)
        runs = _ingest_runs(manifest, start, end)
        datasets.append(
            {
                "dataset": name,
                "rows_now": manifest.rows if manifest else 0,
                "newest_event": manifest.watermark if manifest else None,
                "ingest_runs": runs,
                "quality": sorted(quality, key=lambda q: q["created"]),
                "totals": {k: sum(r[k] for r in runs) for k in _TOTALS},
            }
        )
    return {"datasets": datasets, "problems": problems}


# --- feature freshness ---------------------------------------------------------------------------------------
def _buckets(samples: list, start: datetime, end: datetime) -> list[dict]:
    """Minute samples in at most :data:`MAX_POINTS` equal buckets of time: events summed, the highest p99 and
    maximum, and the median of the minutes' p50 (a bucket with no writes is left out)."""
    step = max((end - start) / MAX_POINTS, timedelta(minutes=1))
    groups: dict[int, list] = {}
    for s in samples:
        groups.setdefault(int((s.minute - start) / step), []).append(s)
    out = []
    for n in sorted(groups):
        g = groups[n]
        p50 = sorted(s.lag_p50 for s in g)
        out.append(
            {
                "at": (start + n * step).isoformat(),
                "events": sum(s.events for s in g),
                "lag_p50": p50[len(p50) // 2],
                "lag_p99": max(s.lag_p99 for s in g),
                "lag_max": max(s.lag_max for s in g),
            }
        )
    return out


def _features(config: Config, storage: Storage, start: datetime, end: datetime) -> dict:
    from kfloop.feature_repo.status import feature_status

    problems: list[str] = []
    try:
        rows = feature_status(config, storage, layout.clean_dataset(config.source.dataset))
    except (ValueError, KeyError, TypeError, KfloopError) as err:
        rows = []
        problems.append(f"feature status unreadable ({type(err).__name__}: {err})")
    try:
        from kfloop.feature_repo.freshness import read_samples
    except ImportError as err:  # the freshness history is a later part of the stack: the status alone still shows
        read_samples, history = None, f"no freshness history in this kfloop ({err})"
    else:
        history = None
    sla = parse_duration(config.features.freshness_sla).total_seconds()
    views = []
    for r in rows:
        view = {
            "view": r.view,
            "stale": r.stale,
            "lag_seconds": r.lag_seconds,
            "sla_seconds": r.sla_seconds,
            "newest_offline": r.newest_offline,
            "newest_online": r.newest_online,
            "online_entities": r.online_entities,
            "pending_source_seconds": r.pending_source_seconds,
            "trend": [],
            "minutes": 0,
            "events": 0,
            "minutes_over_sla": 0,
        }
        if read_samples is not None:
            try:
                samples = read_samples(storage, r.view, start, end)
            except (ValueError, KeyError, TypeError, KfloopError) as err:
                problems.append(f"freshness samples of {r.view} unreadable ({type(err).__name__}: {err})")
                samples = []
            view |= {
                "trend": _buckets(samples, start, end),
                "minutes": len(samples),
                "events": sum(s.events for s in samples),
                "minutes_over_sla": sum(1 for s in samples if s.lag_p99 > sla),
            }
        views.append(view)
    return {"history": history is None, "history_note": history, "views": views, "problems": problems}


# --- model versions ------------------------------------------------------------------------------------------
def _scalars(metrics: object, keys: Iterable[str]) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {k: float(metrics[k]) for k in keys if isinstance(metrics.get(k), int | float)}


def _models(config: Config, storage: Storage, model: str, start: datetime, end: datetime) -> dict:
    from kfloop.registry import ModelRegistry

    task = config.training.task
    names = list(COMPARABLE[task])
    problems: list[str] = []
    registry = ModelRegistry(storage, model)
    try:
        versions = registry.list()
        history = registry.history()
    except (FileNotFoundError, ValueError, KeyError, TypeError, KfloopError) as err:  # a card gone, or not JSON
        problems.append(f"registry of {model!r} unreadable ({err})")
        versions, history = [], []
    rows = []
    for mv in versions[-config.report.versions :]:
        try:
            decision = json.loads(storage.read_text(layout.decision_key(model, mv.version)))
        except FileNotFoundError:
            decision = None
        except ValueError as err:
            problems.append(f"{storage.uri(layout.decision_key(model, mv.version))}: not JSON ({err})")
            decision = None
        decision = decision if isinstance(decision, dict) else None
        rows.append(
            {
                "version": mv.version,
                "stage": mv.stage,
                "framework": mv.card.get("framework"),
                "registered": mv.card.get("registered") or mv.card.get("created"),
                "new": _in(_when(mv.card.get("registered") or mv.card.get("created")), start, end),
                "training_set": (mv.card.get("training_set") or {}).get("run_id"),
                "validation": _scalars((mv.card.get("metrics") or {}).get("validation"), names),
                "test": _scalars(decision.get("candidate"), names) if decision else {},
                "promoted": decision.get("promoted") if decision else None,
                "reasons": list(decision.get("reasons") or []) if decision else [],
            }
        )
    champion = next((mv.version for mv in versions if mv.stage == "champion"), None)
    events = [
        {k: h.get(k) for k in ("at", "version", "event", "previous", "reason")}
        for h in history
        if _in(_when(h.get("at")), start, end) and h.get("event") != "registered"
    ]
    metric = config.training.gate.compared(task)
    return {
        "task": task,
        "metrics": names,
        "compared": metric,
        "higher_is_better": COMPARABLE[task][metric],
        "champion": champion,
        "versions_total": len(versions),
        "versions": rows,
        "stage_changes": events,
        "problems": problems,
    }


# --- drift and retraining ------------------------------------------------------------------------------------
def _check(text: str) -> dict:
    r = json.loads(text)
    drift = r.get("drift") or {}
    drifted = [c.get("column") for c in drift.get("columns") or [] if c.get("drifted")]
    return {
        "check_id": r["check_id"],
        "at": r.get("checked_at"),
        "version": r.get("model_version"),
        "verdict": r.get("verdict"),
        "share": drift.get("share"),
        "rows": (r.get("window") or {}).get("rows"),
        "drifted": drifted,
    }


def episodes(checks: list[dict]) -> list[dict]:
    """Drift episodes among ``checks`` (oldest first): runs of drift verdicts against one version, ended by a
    no_drift of that version or a check of another; insufficient_data neither starts nor ends one (the rule the
    retraining trigger keeps, :func:`kfloop.monitoring.retrain.episode_of`)."""
    out: list[dict] = []
    current: dict | None = None
    for c in checks:
        if current is not None and (c["version"] != current["version"] or c["verdict"] == _NO_DRIFT):
            current["ended"] = c["at"]
            current = None
        if c["verdict"] != _DRIFT:
            continue
        if current is None:
            current = {"version": c["version"], "first": c["at"], "last": c["at"], "ended": None, "checks": 0}
            current |= {"max_share": None, "columns": []}
            out.append(current)
        current["last"], current["checks"] = c["at"], current["checks"] + 1
        if c["share"] is not None:
            current["max_share"] = max(current["max_share"] or 0.0, float(c["share"]))
        current["columns"] = sorted(set(current["columns"]) | set(c["drifted"]))
    return out


def _audit(text: str) -> dict:
    r = json.loads(text)
    keep = ("audit_id", "at", "model", "model_version", "check_id", "verdict", "decision", "reason", "episode")
    return {k: r.get(k) for k in keep} | {"run_id": r.get("run_id"), "source": r.get("source")}


def _drift(storage: Storage, model: str, start: datetime, end: datetime) -> dict:
    from kfloop.monitoring.retrain import AUDIT_KIND, RETRAIN

    problems: list[str] = []
    keys = _keys_in(storage, layout.drift_checks_prefix(model), start, end)
    checks = _read_all(storage, keys, _check, problems)
    audits = _read_all(storage, _keys_in(storage, layout.audit_kind_prefix(AUDIT_KIND), start, end), _audit, problems)
    # the routine "no" on a verdict without drift is left out: one per check, it says nothing a check does not
    decisions = [a for a in audits if a["model"] == model and (a["decision"] != "no" or a["verdict"] == _DRIFT)]
    by_verdict: dict[str, int] = {}
    for c in checks:
        by_verdict[str(c["verdict"])] = by_verdict.get(str(c["verdict"]), 0) + 1
    return {
        "checks": checks,
        "by_verdict": by_verdict,
        "episodes": episodes(checks),
        "decisions": decisions,
        "retrains_started": sum(1 for a in decisions if a["decision"] == RETRAIN),
        "retrains_refused": sum(1 for a in decisions if a["decision"] != RETRAIN),
        "problems": problems,
    }


# --- SLO budgets ---------------------------------------------------------------------------------------------
def _slo(config: Config, storage: Storage, now: datetime, prometheus_url: str | None) -> dict:
    try:
        from kfloop.slo.status import slo_status
    except ImportError as err:  # the SLO engine is a later part of the stack: said, never a crash
        return {"available": False, "note": f"SLO status is not available in this kfloop ({err})", "objectives": []}
    try:
        rows = slo_status(config, storage, now=now, prometheus_url=prometheus_url)
    except (KfloopError, OSError, ValueError) as err:
        return {"available": False, "note": f"SLO status failed: {type(err).__name__}: {err}", "objectives": []}
    keep = ("name", "objective", "window", "sli", "good", "total", "budget_remaining", "source", "detail")
    return {"available": True, "note": None, "objectives": [{k: getattr(r, k) for k in keep} for r in rows]}


# --- the whole report ----------------------------------------------------------------------------------------
def _summary(data: dict, features: dict, models: dict, drift: dict, slo: dict) -> dict:
    runs = [r for d in data["datasets"] for r in d["ingest_runs"]]
    main = data["datasets"][0]
    scores = [q["score"] for q in main["quality"]]
    latest = main["quality"][-1] if main["quality"] else None
    champion = next((v for v in models["versions"] if v["version"] == models["champion"]), None)
    metric = models["compared"]
    headline = None
    if champion:
        headline = champion["test"].get(metric, champion["validation"].get(metric))
    budgets = [o["budget_remaining"] for o in slo["objectives"] if o["budget_remaining"] is not None]
    summary = {
        "ingest_runs": len(runs),
        "rows_read": sum(r["rows_read"] for r in runs),
        "rows_unreadable": sum(r["rows_quarantined"] for r in runs),  # quarantined by ingest: could not be read
        # the contract's quarantine, of the whole dataset as the newest validate run saw it (each run sees it all)
        "rows_quarantined": latest["rows_quarantined"] if latest else None,
        "quarantine_rate": latest["rows_quarantined"] / latest["rows_in"] if latest and latest["rows_in"] else None,
        "quality_runs": len(scores),
        "quality_first": scores[0] if scores else None,
        "quality_last": scores[-1] if scores else None,
        "stale_views": sum(1 for v in features["views"] if v["stale"]),
        "views": len(features["views"]),
        "champion": models["champion"],
        "champion_metric": metric,
        "champion_value": headline,
        "versions_new": sum(1 for v in models["versions"] if v["new"]),
        "stage_changes": len(models["stage_changes"]),
        "drift_checks": len(drift["checks"]),
        "drift_verdicts": drift["by_verdict"].get(_DRIFT, 0),
        "drift_episodes": len(drift["episodes"]),
        "retrains_started": drift["retrains_started"],
        "retrains_refused": drift["retrains_refused"],
        "slos": len(slo["objectives"]),
        "slos_overspent": sum(1 for b in budgets if b < 0),
        "slo_lowest_budget": min(budgets) if budgets else None,
    }
    recorded = (
        summary["ingest_runs"]
        + summary["quality_runs"]
        + models["versions_total"]
        + summary["drift_checks"]
        + len(drift["decisions"])
    )
    summary["empty"] = recorded == 0 and not any(v["newest_online"] or v["minutes"] for v in features["views"])
    return summary


def collect(
    config: Config,
    storage: Storage,
    report_id: str,
    *,
    model: str | None = None,
    period: str | None = None,
    now: datetime | None = None,
    prometheus_url: str | None = None,
) -> dict:
    """The report record of ``model`` (default ``training.model_name``) over the ``period`` (default
    ``report.period``) ending ``now``: every section's data, a summary, and any record that could not be read."""
    end = (now or datetime.now(UTC)).astimezone(UTC)
    period = period or config.report.period
    start = end - parse_duration(period)
    model = model or config.training.model_name
    data = _data(config, storage, start, end)
    features = _features(config, storage, start, end)
    models = _models(config, storage, model, start, end)
    drift = _drift(storage, model, start, end) | {"drift_share": config.monitoring.drift_share}
    slo = _slo(config, storage, end, prometheus_url)
    return {
        "report_id": report_id,
        "project": config.project,
        "model": model,
        "created": end.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat(), "length": period},
        "workspace": storage.uri(""),
        "freshness_sla_seconds": parse_duration(config.features.freshness_sla).total_seconds(),
        "summary": _summary(data, features, models, drift, slo),
        "data": data,
        "features": features,
        "models": models,
        "drift": drift,
        "slo": slo,
    }


def record_json(record: dict[str, Any]) -> str:
    """The record as stored (``<id>.json`` and ``latest.json``)."""
    return json.dumps(record, indent=2, default=str)
