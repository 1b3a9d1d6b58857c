"""The inference log: every scored request's inputs, prediction, model version and time, as Parquet.

The serving process appends on the request path, so ``append`` only copies the columns into an in-memory
buffer under a lock (O(rows), no I/O); a daemon thread writes one Parquet file per flush and date under
``<prefix>/<model>/date=YYYY-MM-DD/``. Memory is bounded: beyond ``max_buffer_rows`` new rows are dropped
and counted instead of slowing requests down. A failed write keeps its rows for the next cycle. The monitor
(and tests) read it back with :func:`read_inference_log`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import REGISTRY, Counter

from kfloop.config import Config
from kfloop.errors import ConfigError, StorageError
from kfloop.schema import ARROW_TYPES
from kfloop.storage import Storage

__all__ = [
    "DEFAULTED",
    "LABEL",
    "SCORE",
    "InferenceLog",
    "inference_log_schema",
    "log_prefix",
    "logged_inputs",
    "read_inference_log",
]

log = logging.getLogger(__name__)

#: Columns the log adds to every row (one value per request).
TIMESTAMP, REQUEST_ID, MODEL_VERSION, PROTOCOL = "timestamp", "request_id", "model_version", "protocol"
#: The prediction columns, named as the predictor's V2 outputs are.
SCORE, LABEL, DEFAULTED = "score", "label", "defaulted"

_ADDED_FIELDS = (
    pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(REQUEST_ID, pa.string()),
    pa.field(MODEL_VERSION, pa.string()),
    pa.field(PROTOCOL, pa.string()),
)
_OUTPUT_FIELDS = (pa.field(SCORE, pa.float64()), pa.field(LABEL, pa.int64()), pa.field(DEFAULTED, pa.bool_()))
_ADDED = frozenset(f.name for f in _ADDED_FIELDS)

#: What converting a caller's values to Arrow may raise (ArrowInvalid is a ValueError, ArrowTypeError a TypeError).
_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)
#: A dropped-rows warning is logged at most this often (the counter has every drop).
DROP_WARNING_SECONDS = 30.0


def counter_once(name: str, documentation: str) -> Counter:
    """A module-level counter labelled by model that survives its module being imported twice (e.g. as
    ``serving.*`` from a checkout): the default registry refuses a second collector of one name, so reuse it."""
    try:
        return Counter(name, documentation, ["model"])
    except ValueError:
        return REGISTRY._names_to_collectors[name]  # type: ignore[return-value]


ROWS_WRITTEN = counter_once("kfloop_inference_log_rows_total", "Inference-log rows written to storage.")
ROWS_DROPPED = counter_once(
    "kfloop_inference_log_dropped_rows_total", "Inference-log rows dropped (buffer full, log closed or bad values)."
)
WRITE_ERRORS = counter_once("kfloop_inference_log_write_errors_total", "Inference-log flushes that failed to write.")


def inference_log_schema(config: Config) -> pa.Schema:
    """The log's columns, derived from the config so every file (and every writer) agrees.

    Entity keys and request features keep their source types; stored features are float64, the dtype the
    model consumes (integer counts are exact in float64 up to 2**53).
    """
    stored = set(config.features.feature_names())
    inputs = [
        pa.field(c, pa.float64() if c in stored else ARROW_TYPES[config.source.columns[c]])
        for c in logged_inputs(config)
    ]
    fields = [*_ADDED_FIELDS, *inputs, *_OUTPUT_FIELDS]
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            "serving.inference_log: column name(s) used twice (entity key, request feature, stored feature or "
            f"one of {', '.join(sorted(_ADDED | {SCORE, LABEL, DEFAULTED}))}): {', '.join(clashes)}"
        )
    return pa.schema(fields)


def logged_inputs(config: Config) -> list[str]:
    """The model-side columns of a row: entity keys, request features, stored features (in that order)."""
    features = config.features
    return [*config.source.entity_keys, *features.request_features, *features.feature_names()]


def log_prefix(config: Config) -> str:
    """Storage prefix of one model's log (without a trailing slash)."""
    return f"{config.serving.inference_log.prefix.strip('/')}/{config.training.model_name}"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One append: its rows' columns (plain lists, copied) and the per-request values."""

    timestamp: datetime
    received: float  # time.monotonic(), for the age trigger
    rows: int
    columns: dict[str, list]
    model_version: str | None
    request_id: str | None
    protocol: str | None


def _snapshot(name: str, values: Any) -> list:
    """A private copy of one column as a list, so later changes by the caller cannot reach the log."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"inference log column {name!r}: expected a 1-D array, got shape {values.shape}")
        return values.tolist()
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.to_pylist()
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"inference log column {name!r}: expected a sequence of values, got {type(values).__name__}")
    tolist = getattr(values, "tolist", None)  # pandas Series / Index: Python scalars, not numpy ones
    return tolist() if callable(tolist) else list(values)


def _to_arrow(values: list, type_: pa.DataType) -> pa.Array:
    """Values → one typed array; NaN becomes null. Falls back to a cast (e.g. bool label → int64)."""
    try:
        return pa.array(values, type_, from_pandas=True)
    except _CONVERSION_ERRORS:
        return pa.array(values, from_pandas=True).cast(type_)


class InferenceLog:
    """Buffers scored requests in memory and writes them as Parquet from a background thread.

    ``append`` never does I/O and never waits for a write; ``flush`` writes now; ``close`` stops the writer
    and writes what is left. Use one instance per serving process and close it on shutdown.
    """

    def __init__(self, storage: Storage, config: Config, *, clock: Callable[[], datetime] | None = None) -> None:
        self._storage = storage
        self._settings = config.serving.inference_log
        self._schema = inference_log_schema(config)
        self._prefix = log_prefix(config)
        self._columns = frozenset(self._schema.names) - _ADDED
        self._clock = clock or (lambda: datetime.now(UTC))
        model = config.training.model_name
        self._written, self._dropped, self._errors = (
            c.labels(model=model) for c in (ROWS_WRITTEN, ROWS_DROPPED, WRITE_ERRORS)
        )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one writer at a time: the thread, flush() or close()
        self._pending: deque[_Entry] = deque()
        self._pending_rows = 0  # rows waiting in _pending
        self._held_rows = 0  # pending + being written: what the bound counts
        self._retry_at = 0.0  # after a failed write, the thread waits until then
        self._closed = False
        self._last_drop_warning = -float("inf")
        self._thread: threading.Thread | None = None
        if self._settings.enabled:
            self._thread = threading.Thread(target=self._run, name=f"inference-log-{model}", daemon=True)
            self._thread.start()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory (waiting or being written)."""
        with self._lock:
            return self._held_rows

    def append(
        self,
        columns: Mapping[str, Any],
        *,
        model_version: str | None,
        request_id: str | None,
        protocol: str,
    ) -> None:
        """Log one request's rows: ``columns`` maps column names (entity keys, request and stored features,
        ``score``, ``label``, ``defaulted``) to equal-length sequences; missing columns are null.

        Raises ``ValueError`` / ``TypeError`` for a caller bug (unknown column, unequal lengths); rows that
        do not fit the buffer are dropped and counted, never waited for.
        """
        if not self._settings.enabled:
            return
        unknown = [c for c in columns if c not in self._columns]
        if unknown:
            raise ValueError(f"inference log: unknown column(s) {', '.join(map(repr, unknown))}")
        snap = {name: _snapshot(name, values) for name, values in columns.items() if values is not None}
        lengths = {len(v) for v in snap.values()}
        if len(lengths) > 1:
            by_column = {k: len(v) for k, v in snap.items()}
            raise ValueError(f"inference log: columns differ in length: {by_column}")
        rows = lengths.pop() if lengths else 0
        if rows == 0:
            return
        entry = _Entry(self._clock(), time.monotonic(), rows, snap, model_version, request_id, protocol)
        with self._lock:
            accepted = not self._closed and self._held_rows + rows <= self._settings.max_buffer_rows
            if accepted:
                self._pending.append(entry)
                self._pending_rows += rows
                self._held_rows += rows
                if len(self._pending) == 1 or self._pending_rows >= self._settings.flush_rows:
                    self._wake.notify()
        if not accepted:
            self._drop(rows, "the log is closed" if self._closed else "the buffer is full (storage slow or down?)")

    def _drop(self, rows: int, why: str) -> None:
        self._dropped.inc(rows)
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_SECONDS:
            self._last_drop_warning = now
            log.warning("inference log %s: dropping rows, %s", self._storage.uri(self._prefix), why)

    def _due_in(self, now: float) -> float:
        """Seconds until the next write is due (≤ 0: now). Called with the lock held."""
        if not self._pending:
            return self._settings.flush_seconds
        if self._pending_rows >= self._settings.flush_rows:
            due = now
        else:
            due = self._pending[0].received + self._settings.flush_seconds
        return max(due, self._retry_at) - now

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (wait := self._due_in(time.monotonic())) > 0:
                    self._wake.wait(wait)
                if self._closed:
                    return
            try:
                self._write_pending()
            except StorageError:
                pass  # logged and counted; the rows wait for the next cycle
            except Exception:  # never let the writer die: the request path would fill the buffer for good
                log.exception("inference log writer: unexpected error")

    def flush(self) -> None:
        """Write everything buffered now; raises ``StorageError`` if storage fails (the rows are kept)."""
        if self._settings.enabled:
            self._write_pending()

    def _write_pending(self, lock_timeout: float = -1) -> None:
        if not self._write_lock.acquire(timeout=lock_timeout):
            raise StorageError(f"inference log {self._storage.uri(self._prefix)}: a write is still running")
        try:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                self._pending_rows = 0
            by_date: dict[date, list[_Entry]] = {}
            for entry in batch:
                by_date.setdefault(entry.timestamp.astimezone(UTC).date(), []).append(entry)
            days = sorted(by_date)
            for i, day in enumerate(days):
                try:
                    self._write_day(day, by_date[day])
                except BaseException:
                    unwritten = set(days[i:])
                    self._requeue([e for e in batch if e.timestamp.astimezone(UTC).date() in unwritten])
                    raise
        finally:
            self._write_lock.release()

    def _requeue(self, entries: list[_Entry]) -> None:
        """Put back what a failed write did not store, oldest first, ahead of rows appended meanwhile."""
        with self._lock:
            self._pending.extendleft(reversed(entries))
            self._pending_rows += sum(e.rows for e in entries)
            self._retry_at = time.monotonic() + self._settings.flush_seconds

    def _write_day(self, day: date, entries: list[_Entry]) -> None:
        table, rejected = self._table(entries)
        key = (
            f"{self._prefix}/date={day.isoformat()}/"
            f"{self._clock().astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.parquet"
        )
        if table.num_rows:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            try:
                self._storage.write_bytes(key, sink.getvalue().to_pybytes())
            except Exception as err:
                self._errors.inc()
                log.error(
                    "inference log: writing %d rows to %s failed: %s", table.num_rows, self._storage.uri(key), err
                )
                raise StorageError(f"{self._storage.uri(key)}: inference log write failed: {err}") from err
            self._written.inc(table.num_rows)
        released = table.num_rows + sum(e.rows for e in rejected)
        with self._lock:
            self._held_rows -= released
            self._retry_at = 0.0
        if rejected:
            self._drop(sum(e.rows for e in rejected), "values do not fit the log schema (see the error above)")

    def _table(self, entries: list[_Entry]) -> tuple[pa.Table, list[_Entry]]:
        """All entries as one table; an entry whose values do not convert is rejected alone, not the batch."""
        try:
            return self._convert(entries), []
        except _CONVERSION_ERRORS:
            pass
        good, bad = [], []
        for entry in entries:
            try:
                good.append(self._convert([entry]))
            except _CONVERSION_ERRORS as err:
                log.error("inference log: dropping request %s (%d rows): %s", entry.request_id, entry.rows, err)
                bad.append(entry)
        return (pa.concat_tables(good) if good else self._schema.empty_table()), bad

    def _convert(self, entries: list[_Entry]) -> pa.Table:
        arrays = []
        for field in self._schema:
            if field.name in _ADDED:
                attr = field.name
                values = [getattr(e, attr) for e in entries for _ in range(e.rows)]
            else:
                values = []
                for e in entries:
                    values.extend(e.columns.get(field.name) or [None] * e.rows)
            try:
                arrays.append(_to_arrow(values, field.type))
            except _CONVERSION_ERRORS as err:
                raise type(err)(f"column {field.name!r} ({field.type}): {err}") from err
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write what is left, retrying a failing storage until ``timeout``; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                self._write_pending(lock_timeout=max(remaining, 0.0))
                return
            except StorageError:
                if remaining <= 0:
                    break
                time.sleep(min(0.5, remaining))
        lost = self.buffered_rows
        self._dropped.inc(lost)
        log.error("inference log %s: closed with %d rows unwritten", self._storage.uri(self._prefix), lost)

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _partition_date(key: str) -> date | None:
    for part in key.split("/"):
        if part.startswith("date="):
            try:
                return date.fromisoformat(part.removeprefix("date="))
            except ValueError:
                return None
    return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file written under an older config: current columns, missing ones null, dropped ones left out."""
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_inference_log(
    storage: Storage, config: Config, *, since: datetime | None = None, until: datetime | None = None
) -> pa.Table:
    """Every logged row with ``since <= timestamp < until`` (naive datetimes are UTC), oldest first.

    Date partitions outside the window are not read. The result has :func:`inference_log_schema`'s
    schema, also when nothing was logged.
    """
    schema = inference_log_schema(config)
    since, until = (None if t is None else _utc(t) for t in (since, until))
    tables = []
    for key in storage.list(log_prefix(config) + "/"):
        day = _partition_date(key)
        if not key.endswith(".parquet") or day is None:
            continue
        if (since and day < since.date()) or (until and day > until.date()):
            continue
        path = storage.local_path(key)
        source = str(path) if path is not None else pa.BufferReader(storage.read_bytes(key))
        tables.append(_conform(pq.read_table(source), schema))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    ts = table.column(TIMESTAMP)
    if since is not None:
        table = table.filter(pc.greater_equal(ts, pa.scalar(since, ts.type)))
        ts = table.column(TIMESTAMP)
    if until is not None:
        table = table.filter(pc.less(ts, pa.scalar(until, ts.type)))
    return table.sort_by(TIMESTAMP)
