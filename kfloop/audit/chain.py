"""The audit trail: an append-only, hash-chained log of every state change, in the workspace.

Why: "who changed what, and when" must survive a careless or dishonest edit. Each record is its own object,
``audit/log/<seq>.json``, created with the storage's exclusive create (so two writers never take one number: the
loser reads the winner's record and chains after it) and never rewritten. Each record holds the hash of the one
before it and its own hash over its canonical JSON, so changing, removing or reordering any record breaks the
chain at that record; ``_head.json`` (the newest number and hash, rewritten after each append) also exposes a
cut-off tail, and a log whose head is gone is reported too (removing the tail and the head together would
otherwise pass). Someone able to rewrite every object can forge a new chain: :func:`verify` prints the head hash so
it can be kept elsewhere (a ticket, a report, ``--expect-head``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kfloop import layout
from kfloop.audit.actor import current_actor
from kfloop.errors import StorageError
from kfloop.storage.base import Storage

#: The ``prev`` of the first record.
GENESIS = "0" * 64
#: Appends give up after this many records appeared under them (only a runaway writer loop gets there).
MAX_RACES = 1000


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its fields but ``hash``, with sorted keys and no spaces."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def _seq_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    stem = name[: -len(".json")] if name.endswith(".json") else ""
    # ASCII digits only: str.isdigit also accepts superscripts (int() refuses them) and other scripts' digits
    return int(stem) if stem.isascii() and stem.isdigit() else None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: with a key twice, readers disagree on which value counts (Python's
    takes the last), so a record could show one thing to a person and hash as another."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = [k for k, _ in pairs]
        raise ValueError(f"key {next(k for k in seen if seen.count(k) > 1)!r} appears twice")
    return out


def _load(storage: Storage, key: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(key), object_pairs_hook=_unique_keys)


def read_head(storage: Storage) -> tuple[int, str] | None:
    """The newest record's (number, hash) as ``_head.json`` says, or None when nothing was ever appended."""
    try:
        head = _load(storage, layout.audit_head_key())
        return int(head["seq"]), str(head["hash"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # an unreadable hint: appends fall back to the listing, verify reports it


def _record_keys(storage: Storage) -> list[tuple[int, str]]:
    """(number, key) of every record, by number. Only a record's own key counts (``audit/log/<12 digits>.json``):
    a copy under another name (``6.json``, a subfolder) is not part of the log, for verify, show and appends alike."""
    keys = ((_seq_of(k), k) for k in storage.list(layout.audit_log_prefix()))
    return sorted((seq, k) for seq, k in keys if seq is not None and k == layout.audit_log_key(seq))


def _start(storage: Storage) -> tuple[int, str]:
    """Where an append starts looking: the head hint, else the newest listed record, else the beginning."""
    head = read_head(storage)
    if head is not None:
        return head
    keys = _record_keys(storage)
    if not keys:
        return 0, GENESIS
    seq, key = keys[-1]
    return seq, str(_load(storage, key).get("hash", GENESIS))


def append(
    storage: Storage,
    action: str,
    subject: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Append one record (``action`` like ``model.promote``; ``subject`` names what changed, e.g. ``{"model": m,
    "version": v}``) and return it. Safe with any number of concurrent writers, locally and on S3."""
    seq, prev = _start(storage)
    who = actor or current_actor()
    for _ in range(MAX_RACES):
        seq += 1
        record: dict[str, Any] = {
            "seq": seq,
            "at": clock().astimezone(UTC).isoformat(),
            "actor": who,
            "action": action,
            "subject": dict(subject),
            "details": dict(details or {}),
            "prev": prev,
        }
        # what is stored is what is hashed: a value JSON cannot hold exactly (a Path, a datetime, a tuple, an int
        # key) is hashed in the form verify will read back, never in its Python form
        record = json.loads(json.dumps(record, default=str))
        record["hash"] = digest(record)
        key = layout.audit_log_key(seq)
        if storage.create_exclusive(key, json.dumps(record, sort_keys=True).encode()):
            _advance_head(storage, seq, record["hash"])
            return record
        prev = _hash_of(storage, key)  # another writer took this number: chain after it
    raise StorageError(f"audit trail: {MAX_RACES} records appeared while appending {action}; not recorded")


def _hash_of(storage: Storage, key: str) -> str:
    """The hash of the record another writer just created (read again briefly: on a filesystem without hard links
    an exclusive create is visible before its bytes are)."""
    problem: Exception | None = None
    for _ in range(50):
        try:
            return str(_load(storage, key)["hash"])
        except (ValueError, KeyError, TypeError) as err:
            problem = err
            time.sleep(0.02)
    raise StorageError(f"audit trail: {storage.uri(key)} is unreadable ({problem}); run `kfloop audit verify`")


def _advance_head(storage: Storage, seq: int, hash_: str) -> None:
    """Move the hint forward. Read-then-write is not atomic: a slower writer of an older record may put the head
    back after a newer one moved it. So every writer, after writing, follows the records that exist past what it
    wrote and writes again; the last writer to write thus leaves the newest record it could see, and any record
    created after that look belongs to a writer whose own head write comes later."""
    head = read_head(storage)
    if head is not None and head[0] >= seq:
        return
    for _ in range(MAX_RACES):
        storage.write_text(layout.audit_head_key(), json.dumps({"seq": seq, "hash": hash_}))
        newer = seq
        while storage.exists(layout.audit_log_key(newer + 1)):
            newer += 1
        if newer == seq:
            return
        seq, hash_ = newer, _hash_of(storage, layout.audit_log_key(newer))


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found."""

    records: int  # records checked in order before the first problem (all of them when ok)
    head: str  # hash of the newest good record (GENESIS for an empty log)
    first_bad: int | None = None  # number of the first record that breaks the chain
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(storage: Storage, expect_head: str | None = None) -> Verdict:
    """Walk the chain from record 1 and name the first record that was changed, removed or reordered. Safe while
    others append: the head is read before the records are listed (a record exists before the head names it).

    ``expect_head``: a head hash printed by an earlier verify and kept elsewhere. Records appended since then are
    fine; the log must still hold that record, so nothing up to it was rewritten (or removed with the head)."""
    head = _head_state(storage)
    floor = _config_floor(storage)
    keys = _record_keys(storage)
    prev, good = GENESIS, 0
    records: list[dict[str, Any]] = []
    for expected, (seq, key) in enumerate(keys, start=1):
        if seq != expected:
            return Verdict(good, prev, expected, f"record {expected} is missing (removed): the next one is {seq}")
        try:
            record = _load(storage, key)
        except (ValueError, FileNotFoundError) as err:
            return Verdict(good, prev, seq, f"record {seq} is unreadable ({type(err).__name__}: {err})")
        if not isinstance(record, dict):
            return Verdict(good, prev, seq, f"record {seq} is not a record (a JSON {type(record).__name__})")
        if not isinstance(record.get("seq"), int) or isinstance(record.get("seq"), bool):
            return Verdict(good, prev, seq, f"record {seq} was changed: its number is {record.get('seq')!r}")
        if record["seq"] != seq:
            return Verdict(good, prev, seq, f"record {seq} holds record {record['seq']}'s content (reordered or moved)")
        if record.get("hash") != digest(record):
            return Verdict(good, prev, seq, f"record {seq} was changed: its content does not match its hash")
        if record.get("prev") != prev:
            return _broken_link(storage, keys, records, record)
        records.append(record)
        prev, good = record["hash"], seq
    if floor is not None and floor > good:
        return Verdict(
            good,
            prev,
            good + 1,
            f"records {good + 1} to {floor} are missing: {layout.audit_config_last_key()} names record {floor} "
            "(the log was cut off or deleted)",
        )
    return _check_head(storage, head, records, prev, expect_head)


def _config_floor(storage: Storage) -> int | None:
    """The number of the newest ``config.change`` record, as ``audit/config/_last.json`` says (written after that
    record exists): a second witness of how long the log is, outside ``audit/log/``."""
    try:
        seq = json.loads(storage.read_bytes(layout.audit_config_last_key())).get("seq")
    except (FileNotFoundError, ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


#: How far from its place a moved (re-numbered, re-hashed) record is looked for when a link breaks.
MOVE_WINDOW = 50


def _broken_link(
    storage: Storage, keys: list[tuple[int, str]], before: list[dict[str, Any]], record: dict[str, Any]
) -> Verdict:
    """Record ``n`` is intact in itself but does not follow record ``n - 1``. If it follows another record of the
    log (as that record is now, or as it was before being re-numbered), it was moved: ``n`` is the first bad one.
    If it follows a record no longer in the log, the record it followed was replaced by a re-hashed forgery (or
    removed, the rest re-numbered): the first bad one is ``n - 1`` (for record 1: records before it are gone)."""
    seq, prev = record["seq"], record.get("prev")
    nearby = [r for r in before if r["seq"] >= seq - MOVE_WINDOW]
    for _, key in keys[seq - 1 : seq + MOVE_WINDOW]:
        with contextlib.suppress(ValueError, FileNotFoundError):
            later = _load(storage, key)
            if isinstance(later, dict) and isinstance(later.get("seq"), int):
                nearby.append(later)
    for other in nearby:
        places = range(max(1, seq - MOVE_WINDOW), seq + MOVE_WINDOW + 1)
        was = next((p for p in places if digest({**other, "seq": p}) == prev), None)
        if was is not None and other["seq"] != seq:
            return Verdict(
                seq - 1,
                before[-1]["hash"] if before else GENESIS,
                seq,
                f"record {seq} was moved: it follows record {other['seq']} (then numbered {was}), not record "
                f"{seq - 1} (reordered)",
            )
    if seq == 1:
        return Verdict(0, GENESIS, 1, "record 1 does not start the chain: the records before it were removed")
    good = before[:-1]
    return Verdict(
        seq - 2,
        good[-1]["hash"] if good else GENESIS,
        seq - 1,
        f"record {seq - 1} was replaced (a re-hashed forgery, or records after it removed and the rest "
        f"re-numbered): record {seq} follows a record {seq - 1} that is no longer in the log",
    )


def _head_state(storage: Storage) -> tuple[int, str] | str:
    """The head hint, or why there is none: ``"missing"`` or ``"unreadable"``."""
    try:
        storage.read_bytes(layout.audit_head_key())
    except FileNotFoundError:
        return "missing"
    return read_head(storage) or "unreadable"


def _check_head(
    storage: Storage, head: tuple[int, str] | str, records: list[dict[str, Any]], prev: str, expect_head: str | None
) -> Verdict:
    """The end of an intact walk: the head hint must exist, not point past the walk, and name its record by that
    record's hash (a head behind the walk is normal while others append, but it was written with the right hash);
    the expected head, if any, must be the hash of a record of the walk."""
    good = len(records)
    late = False
    if isinstance(head, str) and good:
        head = _head_state(storage)  # the first append may have written it since (records come first)
        late = True  # read after the listing: a head past the walk is then a newer append, not a cut
    if isinstance(head, str) and good:
        return Verdict(good, prev, None, f"{layout.audit_head_key()} is {head}: records at the end may be removed")
    if not isinstance(head, str) and head[0] > good and not late:
        return Verdict(good, prev, good + 1, f"records {good + 1} to {head[0]} are missing: the log was cut off")
    if not isinstance(head, str) and head[0] == good and good and head[1] != prev:
        return Verdict(good, prev, good, f"record {good} is not the record the head points to (replaced)")
    if not isinstance(head, str) and 0 < head[0] < good and records[head[0] - 1]["hash"] != head[1]:
        return Verdict(
            good,
            prev,
            head[0],
            f"{layout.audit_head_key()} names record {head[0]} with another hash than that record's (the head was "
            "rewritten: records after it may be removed)",
        )
    if expect_head is not None and expect_head != GENESIS and all(r["hash"] != expect_head for r in records):
        return Verdict(
            good,
            prev,
            None,
            f"no record has the kept head hash (newest: {prev}, not the expected {expect_head}): the log was "
            "rewritten or cut off from some record on, or it is another log",
        )
    return Verdict(good, prev)


def read(
    storage: Storage,
    *,
    since: datetime | None = None,
    model: str | None = None,
    actions: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Records in order, optionally only those at or after ``since``, about ``model`` (``subject.model``) or of
    the given actions (an action ``x`` also matches ``x.*``)."""
    wanted = tuple(actions or ())
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a naive time is UTC, as every record's
    out = []
    for _, key in _record_keys(storage):
        try:
            record = _load(storage, key)
        except (ValueError, FileNotFoundError):
            continue  # verify names it; reading the rest is still useful
        if not isinstance(record, dict):
            continue
        if since is not None and _at(record) < since:
            continue
        subject = record.get("subject")
        if model is not None and (not isinstance(subject, dict) or subject.get("model") != model):
            continue
        action = str(record.get("action", ""))
        if wanted and not any(action == a or action.startswith(a + ".") for a in wanted):
            continue
        out.append(record)
    return out


def _at(record: Mapping[str, Any]) -> datetime:
    """When a record was written (a missing or garbled time sorts first: verify names such a record)."""
    try:
        at = datetime.fromisoformat(str(record.get("at")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)
