"""The window a drift check compares: the champion's newest rows of the inference log.

Only rows the champion version scored count (rows of the version before a switch describe another model's
traffic and predictions). The window is the last ``monitoring.window.duration`` before the check and/or the
newest ``monitoring.window.rows`` rows. The log is read one date partition at a time, newest first, so a
row-count window stops reading once it has its rows instead of loading the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.serving.log_table import MODEL_VERSION, TIMESTAMP, inference_log_schema, log_prefix, read_inference_log
from kfloop.storage import Storage


@dataclass(frozen=True)
class Window:
    """The window's rows (oldest first) and its bounds: asked (``since``, ``until``) and found (``first``,
    ``last`` logged timestamps)."""

    table: pa.Table
    since: datetime | None
    until: datetime
    first: datetime | None
    last: datetime | None

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def bounds(self) -> dict:
        """The window as the verdict record states it (ISO times)."""

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "first": iso(self.first),
            "last": iso(self.last),
            "rows": self.rows,
        }


def _dates(storage: Storage, config: Config) -> list[str]:
    """The log's date partitions (``YYYY-MM-DD``), newest first."""
    found = set()
    for key in storage.list(log_prefix(config) + "/"):
        for part in key.split("/"):
            if part.startswith("date=") and key.endswith(".parquet"):
                found.add(part.removeprefix("date="))
    return sorted(found, reverse=True)


def read_window(storage: Storage, config: Config, version: str, now: datetime | None = None) -> Window:
    """The rows of ``version`` in the configured window ending at ``now`` (default: the wall clock)."""
    window = config.monitoring.window
    until = (now or datetime.now(UTC)).astimezone(UTC)
    since = until - parse_duration(window.duration) if window.duration else None
    parts: list[pa.Table] = []
    have = 0
    for day in _dates(storage, config):
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        if start >= until or (since is not None and start + timedelta(days=1) <= since):
            continue
        table = read_inference_log(
            storage, config, since=max(start, since) if since else start, until=min(start + timedelta(days=1), until)
        )
        table = table.filter(pc.equal(table.column(MODEL_VERSION), pa.scalar(version)))
        parts.append(table)
        have += table.num_rows
        if window.rows is not None and have >= window.rows:
            break
    table = pa.concat_tables(reversed(parts)) if parts else inference_log_schema(config).empty_table()
    table = table.sort_by(TIMESTAMP)
    if window.rows is not None and table.num_rows > window.rows:
        table = table.slice(table.num_rows - window.rows)
    ts = table.column(TIMESTAMP)
    first = pc.min(ts).as_py() if table.num_rows else None
    last = pc.max(ts).as_py() if table.num_rows else None
    return Window(table, since, until, first, last)
