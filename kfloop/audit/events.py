"""The audit record of each kind of state change, and what a failed append does to the change.

Why one module: every stage that changes state calls one function here (one line at the call site), so the record's
shape per action and the failure policy live in one place:

- :func:`before` — the change is one write not made yet (a registry stage change, under its lease): the record is
  appended first and a failed append raises, so the change is not made and nothing goes unrecorded. (If the write
  itself then fails, the trail holds a record of a change that did not happen; the registry shows the truth.)
- :func:`after` — the change is already visible and cannot cheaply be undone (a lake commit, a quarantine file, an
  InferenceService update, a retrain decision whose run started): a failed append is logged at ERROR with the
  whole record, so it can be appended by hand, and the operation still succeeds.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kfloop.audit.chain import append
from kfloop.storage.base import Storage

log = logging.getLogger(__name__)

#: At most this many distinct reasons in a quarantine record (the quarantine file holds every row's).
MAX_REASONS = 10
_REASON_CHARS = 200


def before(storage: Storage, action: str, subject: Mapping[str, Any], details: Mapping[str, Any]) -> dict:
    """Append ahead of the change it records; raises (the caller then does not make the change)."""
    return append(storage, action, subject, details)


def after(
    storage: Storage, action: str, subject: Mapping[str, Any], details: Mapping[str, Any] | None = None
) -> dict | None:
    """Append for a change already made; a failure is logged (never raised), with the record to re-append."""
    try:
        return append(storage, action, subject, details)
    except Exception as err:  # the change is made: an audit failure must not turn it into a failed run
        body = json.dumps({"action": action, "subject": dict(subject), "details": dict(details or {})}, default=str)
        log.error(
            "audit trail: could not record %s (%s: %s); the record was: %s", action, type(err).__name__, err, body
        )
        return None


#: A value quoted in a reason (``'c-00042'``, ``"x"``) or a number, date or time: masked in the audit trail.
_VALUE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\b\d[\w.:+\-]*")


def mask_values(reason: str) -> str:
    """A quarantine reason without the values it quotes: the trail can never be rewritten, so it must hold no
    data that `kfloop forget` would have to erase (the quarantine files keep the full reasons)."""
    return _VALUE.sub("…", reason)


def reasons_summary(reasons: Iterable[str | None]) -> dict[str, int]:
    """``{reason: rows}`` for the most frequent reasons (values masked, each cut to 200 characters), most frequent
    first."""
    counts = Counter(mask_values(r or "")[:_REASON_CHARS] for r in reasons)
    return dict(counts.most_common(MAX_REASONS))


def parquet_reasons(path: Path, column: str) -> dict[str, int]:
    """:func:`reasons_summary` of ``column`` in a local quarantine file. Best effort: an unreadable file gives
    ``{}`` (the record still counts the rows)."""
    import pyarrow.parquet as pq

    try:
        return reasons_summary(pq.read_table(path, columns=[column]).column(0).to_pylist())
    except (OSError, KeyError, ValueError) as err:
        log.warning("audit trail: could not summarise the reasons in %s: %s", path, err)
        return {}


def ingest_commit(storage: Storage, dataset: str, run: Mapping[str, Any], quarantine: Path | None) -> None:
    """``ingest.commit`` for a committed ingest run, then ``ingest.quarantine`` if it set rows aside (unreadable or
    too late). Called once, after the manifest commit, only when this run's commit is the one in force."""
    source = {"uri": run.get("source"), "sha256": run.get("source_sha256")}
    source |= {k.removeprefix("source_"): run[k] for k in ("source_etag", "source_version_id") if run.get(k)}
    subject = {"dataset": dataset, "run": run.get("run_id")}
    after(
        storage,
        "ingest.commit",
        subject,
        {
            "rows": run.get("rows_written", 0),
            "rows_read": run.get("rows_read", 0),
            "files": list(run.get("files", [])),
            "sources": [source],
            "replace": bool(run.get("replace")),
            "watermark_before": run.get("watermark_before"),
        },
    )
    unreadable, too_late = run.get("rows_quarantined", 0), run.get("rows_too_late", 0)
    if not unreadable and not too_late:
        return
    from kfloop.cast import REASON_COLUMN

    reasons = parquet_reasons(quarantine, REASON_COLUMN) if unreadable and quarantine else {}
    if too_late:
        reasons[f"older than source.allowed_lateness ({run.get('allowed_lateness')})"] = too_late
    details = {"rows": unreadable + too_late, "unreadable": unreadable, "too_late": too_late, "reasons": reasons}
    details["files"] = [k for k in (run.get("quarantine"), run.get("too_late")) if k]
    after(storage, "ingest.quarantine", subject, details)


def validate_quarantine(
    storage: Storage, dataset: str, run_id: str, rows: int, key: str, reasons: Mapping[str, int]
) -> None:
    """``validate.quarantine`` once the contract's quarantine file of a run is stored (only with rows in it);
    ``reasons``: :func:`parquet_reasons` of the local file (rows per check), taken before it was moved."""
    after(
        storage,
        "validate.quarantine",
        {"dataset": dataset, "run": run_id},
        {"rows": rows, "file": key, "reasons": dict(reasons)},
    )


#: The stage each registry action leaves the version in.
TO_STAGE = {"model.promote": "champion", "model.rollback": "champion", "model.reject": "rejected"}


def model_stage(storage: Storage, action: str, model: str, version: str, from_stage: str, **details: Any) -> None:
    """``model.promote`` / ``model.rollback`` / ``model.reject`` (see :data:`TO_STAGE`), appended under the
    registry's lease before ``stages.json`` is written: a failed append leaves the stages as they were."""
    stages = {"from_stage": from_stage, "to_stage": TO_STAGE[action]}
    before(storage, action, {"model": model, "version": version}, {**stages, **details})


def deploy_apply(storage: Storage, model: str, version: str | None, target: str, **details: Any) -> None:
    """``deploy.apply`` after the serving side was changed (the deploy step created or updated the
    InferenceService)."""
    after(storage, "deploy.apply", {"model": model, "version": version}, {"target": target, **details})


def retrain_decision(storage: Storage, decision: Mapping[str, Any], key: str) -> None:
    """``retrain.decision`` pointing at the decision's own record (``audit/retrain/<id>.json``, written first)."""
    after(
        storage,
        "retrain.decision",
        {"model": decision.get("model"), "version": decision.get("model_version")},
        {
            "decision": decision.get("decision"),
            "reason": decision.get("reason"),
            "check_id": decision.get("check_id"),
            "run_id": decision.get("run_id"),
            "record": key,
        },
    )
