"""Whether a drift verdict starts a retrain, decided once per drift episode, and audited every time.

Guards, in order (the first that holds is the decision's reason):

- only a ``drift`` verdict starts anything: ``no_drift`` and ``insufficient_data`` never do, nor a drift
  verdict on fewer than ``monitoring.min_rows`` rows (the minimum-data guard);
- the verdict must be about the current champion: a check of a version since replaced is stale;
- **one retrain per drift episode.** An episode is the run of drift verdicts against one champion version
  since the last check that ended the previous one (a ``no_drift`` of that version, or a check of another
  version); ``insufficient_data`` neither starts nor ends it. Its id is that boundary check's id (``first``
  if none), so checks that race all name the same episode, whichever of them was written first. The
  decision holds the lease keyed by (version, episode) and writes the episode's marker under it, so of five
  overlapping checks exactly one starts a run; a promoted retrain changes the champion, which starts a new
  episode;
- a **cooldown**: no run within ``monitoring.retrain.cooldown`` of the last one started (any episode),
  measured on the clock passed in (tests inject one).

Every decision, including each "no", is appended to the audit trail as an object of its own
(``audit/retrain/<time>-<random>.json``): concurrent deciders never rewrite one file. A run started, or
refused on a drift verdict, is also sent to ``alerts.webhooks`` (:mod:`kfloop.monitoring.notify`).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from kfloop import layout
from kfloop.audit import events as audit_events
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.errors import LeaseBusyError
from kfloop.lineage.run import emits
from kfloop.monitoring.check import DRIFT, INSUFFICIENT_DATA, NO_DRIFT
from kfloop.monitoring.event_metrics import retrain_metrics_from_audit, retrain_metrics_key
from kfloop.monitoring.launch import Launcher
from kfloop.monitoring.monitor import check_ids, read_check
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage
from kfloop.storage.lease import lease

RETRAIN, NO, FAILED = "retrain", "no", "failed"
AUDIT_KIND = "retrain"
#: Deciders of one episode wait this long for each other (a decision takes a storage round trip or a run
#: submission); a holder silent this long is taken to be dead.
LEASE_TIMEOUT_S = 120.0
LEASE_STALE_S = 60.0


def episode_of(storage: Storage, record: dict) -> str:
    """The drift episode ``record`` (a drift verdict) belongs to: the id of the newest earlier check that
    was not part of it (``no_drift`` of the same version, or any check of another version), or ``first``."""
    model, version, own = record["model"], record["model_version"], record["check_id"]
    for check_id in reversed([c for c in check_ids(storage, model) if c < own]):
        try:
            earlier = read_check(storage, model, check_id)
        except FileNotFoundError:  # removed meanwhile
            continue
        if earlier.get("model_version") != version or earlier.get("verdict") == NO_DRIFT:
            return check_id
    return "first"


def _drifted(record: dict) -> list[dict]:
    drift = record.get("drift") or {}
    cols = list(drift.get("drifted") or [])
    if drift.get("prediction") and drift["prediction"].get("drifted"):
        cols.append(drift["prediction"])
    keep = ("column", "stattest", "score", "threshold", "prediction")
    return [{k: c.get(k) for k in keep} for c in cols]


def _refusal(config: Config, storage: Storage, record: dict) -> str | None:
    """Why ``record`` cannot start a retrain whatever the episode, or None."""
    verdict = record.get("verdict")
    if verdict == INSUFFICIENT_DATA:
        return f"insufficient_data is never a trigger ({(record.get('drift') or {}).get('reason', 'too few rows')})"
    if verdict != DRIFT:
        return f"verdict {verdict}: no drift"
    rows, least = (record.get("window") or {}).get("rows", 0), config.monitoring.min_rows
    if rows < least:
        return f"{rows} rows in the window, fewer than monitoring.min_rows ({least})"
    champion = ModelRegistry(storage, record["model"]).champion()
    if champion is None or champion.version != record["model_version"]:
        now = champion.version if champion else "none"
        return f"the check is of {record['model_version']}, the champion is now {now}: stale verdict"
    return None


def _cooldown_left(config: Config, storage: Storage, model: str, now: datetime) -> tuple[dict, datetime] | None:
    """(the last run started, when the next may start) while the cooldown runs, else None."""
    try:
        last = json.loads(storage.read_text(layout.retrain_last_key(model)))
    except FileNotFoundError:
        return None
    until = datetime.fromisoformat(last["started_at"]) + parse_duration(config.monitoring.retrain.cooldown)
    return (last, until) if now < until else None


@emits("retrain_decision")
def decide(
    config: Config,
    storage: Storage,
    record: dict,
    launcher: Launcher,
    *,
    now: datetime | None = None,
    source: str = "check",
    context: dict | None = None,
) -> dict:
    """Decide on ``record`` (a stored verdict record), start a run through ``launcher`` if every guard
    passes, append the decision to the audit trail and notify ``alerts.webhooks`` of a run started or
    refused; returns the audit record. ``source`` and ``context`` say what asked (a check, a webhook
    alert). A launcher error is audited as ``failed`` (and notified as refused), then raised."""
    audit = _decide(config, storage, record, launcher, now=now, source=source, context=context)
    _announce(config, storage, audit)
    model = audit["model"]  # the alert rules' kfloop_retrain_decision_timestamp_seconds, from the whole trail
    storage.write_bytes(retrain_metrics_key(model), retrain_metrics_from_audit(model, read_audit(storage)))
    return audit


def _decide(
    config: Config,
    storage: Storage,
    record: dict,
    launcher: Launcher,
    *,
    now: datetime | None = None,
    source: str = "check",
    context: dict | None = None,
) -> dict:
    """:func:`decide` without the notification."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    audit = {
        "source": source,
        "context": context or {},
        "model": record["model"],
        "model_version": record["model_version"],
        "check_id": record["check_id"],
        "verdict": record.get("verdict"),
        "share": (record.get("drift") or {}).get("share"),
        "drifted": _drifted(record),
        "episode": None,
        "run_id": None,
        "run": None,
    }
    refusal = _refusal(config, storage, record)
    if refusal:
        return append_audit(storage, {**audit, "decision": NO, "reason": refusal}, now)
    model, version = record["model"], record["model_version"]
    episode = audit["episode"] = episode_of(storage, record)
    try:
        with lease(
            storage,
            layout.retrain_lease_key(model, version, episode),
            name=f"retrain decision {model} {version} episode {episode}",
            owner=record["check_id"],
            timeout_s=LEASE_TIMEOUT_S,
            stale_after_s=LEASE_STALE_S,
        ) as held:
            refusal = _refusal_in_episode(config, storage, record, episode, now)
            if refusal:
                return append_audit(storage, {**audit, "decision": NO, "reason": refusal}, now)
            run_name = f"retrain-{model}-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
            try:
                run = launcher.start(config, run_name)
            except Exception as err:
                failed = {**audit, "decision": FAILED, "reason": f"starting the run failed: {err}"}
                _announce(config, storage, append_audit(storage, failed, now))
                raise
            started = {"run_id": run["run_id"], "check_id": record["check_id"], "started_at": now.isoformat()}
            held.check()  # a decider taken over while starting must not mark the episode (its successor does)
            storage.write_text(layout.retrain_episode_key(model, version, episode), json.dumps(started | {"run": run}))
            storage.write_text(layout.retrain_last_key(model), json.dumps(started | {"episode": episode, "run": run}))
    except LeaseBusyError as err:  # another decider of this episode is still starting its run: it decides
        reason = f"another decision of episode {episode} is still under way: {err}"
        return append_audit(storage, {**audit, "decision": NO, "reason": reason}, now)
    reason = f"drift on {version} (episode {episode}): started run {run['run_id']}"
    return append_audit(
        storage, {**audit, "decision": RETRAIN, "reason": reason, "run_id": run["run_id"], "run": run}, now
    )


def _refusal_in_episode(config: Config, storage: Storage, record: dict, episode: str, now: datetime) -> str | None:
    """Why the episode starts no run now (it already has, or the cooldown runs), or None; under its lease."""
    model, version = record["model"], record["model_version"]
    try:
        started = json.loads(storage.read_text(layout.retrain_episode_key(model, version, episode)))
    except FileNotFoundError:
        started = None
    if started is not None:
        return f"episode {episode} of {version} already started run {started['run_id']} (check {started['check_id']})"
    cooling = _cooldown_left(config, storage, model, now)
    if cooling:
        last, until = cooling
        return f"cooldown: run {last['run_id']} started at {last['started_at']}; next from {until.isoformat()}"
    return None


def _announce(config: Config, storage: Storage, audit: dict) -> None:
    """Notify ``alerts.webhooks`` of a retrain started, or refused on a drift verdict (other "no"s are routine)."""
    from kfloop.monitoring.notify import Notification, notify

    if audit["decision"] != RETRAIN and audit["verdict"] != DRIFT:
        return
    kind = "retrain_started" if audit["decision"] == RETRAIN else "retrain_refused"
    details = {k: audit[k] for k in ("model_version", "check_id", "episode", "run_id") if audit.get(k)}
    summary = f"{audit['model']} {audit['model_version']}: {audit['reason']}"
    notify(config, Notification(kind, summary, details, model=audit["model"]), storage=storage)


def append_audit(storage: Storage, record: dict, now: datetime) -> dict:
    """Write ``record`` as a new audit object (a time-sortable id, never overwritten); returns it with its id."""
    while True:
        audit_id = f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
        full = {"audit_id": audit_id, "kind": AUDIT_KIND, "at": now.isoformat(), **record}
        key = layout.audit_key(AUDIT_KIND, audit_id)
        if storage.create_exclusive(key, json.dumps(full, indent=2, default=str).encode()):
            audit_events.retrain_decision(storage, full, key)  # the trail's record points at this one
            return full


def read_audit(storage: Storage) -> list[dict]:
    """Every retrain decision, oldest first."""
    keys = storage.list(layout.audit_kind_prefix(AUDIT_KIND) + "/")
    return [json.loads(storage.read_text(k)) for k in sorted(keys) if k.endswith(".json")]
