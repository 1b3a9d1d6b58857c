"""Accepted stream records into the raw lake: an ingest of the records as JSON Lines, so nothing is lost and the
batch stages see exactly the events the stream counted.

Why ingest itself: it is where records are cast, quarantined with the reason, compared with the lake (already
ingested) and committed atomically under the dataset's lease. A record delivered twice (the worker died before
acknowledging it) is an equal row of a committed file: ingest skips it, so the lake holds it once. What is too
late was decided when the worker read the record, against the lake as it was then (:data:`DECIDED`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

from kfloop.components.ingest import IngestResult, ingest
from kfloop.config import Config
from kfloop.storage import Storage
from kfloop.stream.events import Message

#: The lateness an archive of accepted records is ingested with: the worker already decided, against the lake's
#: watermark when it read them, that they are not too late; another worker's archive since may have moved the
#: watermark past them, and ingest must not then set aside events the online store already counts.
DECIDED = "36500d"


def jsonl_config(config: Config, allowed_lateness: str | None = None) -> Config:
    """The config ingest reads a stream archive with: the source's columns and contract, JSON Lines format."""
    update: dict = {"format": "jsonl"}
    if allowed_lateness is not None:
        update["allowed_lateness"] = allowed_lateness
    return config.model_copy(update={"source": config.source.model_copy(update=update)})


def _distinct(messages: Sequence[Message]) -> list[Message]:
    """One record per stream id, and one per payload: an exact copy delivered twice is one event (the stream
    counts it once online; across archives, ingest skips a row the lake already holds)."""
    seen_ids, seen_payloads, out = set(), set(), []
    for m in messages:
        if m.id in seen_ids or m.payload in seen_payloads:
            continue
        seen_ids.add(m.id)
        seen_payloads.add(m.payload)
        out.append(m)
    return out


def _line(payload: bytes, columns: list[str]) -> bytes:
    """One JSON Lines line. An event is projected onto the source's columns: a missing field is a null (as the
    worker read it) and an extra one is dropped, so one odd event cannot fail the whole archive's schema check
    and block the stream. A record that is not a JSON object goes in as it came, for ingest to quarantine."""
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return (payload or b'""').replace(b"\n", b" ") + b"\n"  # empty: a record, not a blank line
    if not isinstance(record, dict):
        return payload.replace(b"\n", b" ") + b"\n"
    return orjson.dumps({c: record.get(c) for c in columns}) + b"\n"


def _ingest(config: Config, storage: Storage, messages: Sequence[Message], tmp: Path, name: str) -> IngestResult:
    path = tmp / f"{name}.jsonl"
    columns = list(config.source.file_columns)
    with open(path, "wb") as fh:
        for m in _distinct(messages):
            fh.write(_line(m.payload, columns))
    return ingest(config, storage, source_uri=str(path))


def archive(
    config: Config, storage: Storage, accepted: Sequence[Message], refused: Sequence[Message]
) -> list[IngestResult]:
    """Ingest every record read since the last archive: the ones the worker refused (unreadable, mistyped, too
    late) as any file's records, so ingest quarantines them with the reason; the accepted ones (counted online,
    or left to validate's contract) taking the worker's lateness decision (:data:`DECIDED`)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="kfloop-stream-") as tmp:
        if refused:
            out.append(_ingest(jsonl_config(config), storage, refused, Path(tmp), _name("refused", refused)))
        if accepted:
            out.append(_ingest(jsonl_config(config, DECIDED), storage, accepted, Path(tmp), _name("stream", accepted)))
    return out


def _name(kind: str, messages: Sequence[Message]) -> str:
    """The archive file's name: which stream records it holds (shown as the ingest run's source)."""
    return f"{kind}-{messages[0].id}-{messages[-1].id}".replace(":", "_")
