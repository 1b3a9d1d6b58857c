"""Minute samples kept as one object per writer and hour: the layout the freshness samples (every online-store
writer) and serving's request samples share.

Why this shape: many processes record at once (stream workers, materialize runs, serving replicas) and S3 has no
append, so each writer owns its objects and rewrites only its own current hour; readers list the hours a window
overlaps and combine the writers. One object per minute would make a 30-day window tens of thousands of reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from kfloop.errors import StorageError
from kfloop.storage import Storage

#: How an hour object's folder is named (UTC).
HOUR_FORMAT = "%Y-%m-%dT%H"


def minute_of(t: datetime) -> datetime:
    """The start of ``t``'s minute, in UTC."""
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def hour_of(minute: datetime) -> str:
    """The hour folder a minute's sample is stored under."""
    return minute.astimezone(UTC).strftime(HOUR_FORMAT)


def hour_bodies(storage: Storage, prefix: str, start: datetime, end: datetime, what: str) -> Iterator[tuple[str, list]]:
    """(key, JSON body: a list of samples) of every writer's hour object under ``prefix`` whose hour overlaps
    ``[start, end)``. Other objects under the prefix are ignored; an hour object that is not JSON raises a
    :class:`StorageError` naming it (``what``: what its writer records, for the message)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    for key in storage.list(prefix):
        hour = key[len(prefix) + 1 :].split("/", 1)[0]
        try:
            begins = datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a sample object
        if begins + timedelta(hours=1) <= start or begins >= end:
            continue
        try:
            body = json.loads(storage.read_text(key))
        except ValueError as err:
            raise StorageError(f"{storage.uri(key)}: not a JSON list of {what} ({err})") from err
        if not isinstance(body, list):
            raise StorageError(f"{storage.uri(key)}: not a JSON list of {what}")
        yield key, body
