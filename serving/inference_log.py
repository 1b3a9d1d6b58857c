"""The inference log: every scored request's inputs, prediction, model version and time, as Parquet.

The serving process appends on the request path, so ``append`` only copies the request's columns into one
pickled ``bytes`` record and adds it to an in-memory buffer under a lock: no I/O, no encoding, and nothing
for the garbage collector to walk. A daemon thread hands each batch to the encoder process
(:mod:`kfloop.serving._log_encoder`), which builds one zstd Parquet file per date off this process's GIL,
and writes the files under ``<prefix>/<model>/date=YYYY-MM-DD/``. Memory is bounded: beyond
``max_buffer_rows`` new rows are dropped and counted instead of slowing requests down. A failed write keeps
its file for the next cycle (same key: a retry never duplicates rows). ``close`` bounds the last flush by
``shutdown_timeout_seconds``. The monitor (and tests) read the log back with :func:`read_inference_log`.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from prometheus_client import REGISTRY, Counter

from kfloop.config import Config
from kfloop.errors import EncoderError, StorageError
from kfloop.serving._log_encoder import EPOCH, MICROSECOND, PER_REQUEST, Encoder, record
from kfloop.serving.log_table import (  # re-exported: the log's public API stays here
    _ADDED,
    _ADDED_FIELDS,
    DEFAULTED,
    LABEL,
    PROBABILITIES,
    SCORE,
    VIOLATIONS,
    inference_log_schema,
    log_prefix,
    logged_inputs,
    read_inference_log,
)
from kfloop.storage import Storage

__all__ = [
    "DEFAULTED",
    "LABEL",
    "PROBABILITIES",
    "SCORE",
    "VIOLATIONS",
    "InferenceLog",
    "inference_log_schema",
    "log_prefix",
    "logged_inputs",
    "read_inference_log",
]

log = logging.getLogger(__name__)


assert len(_ADDED_FIELDS) == PER_REQUEST  # the encoder takes the per-request values from the record's head
#: The longest one batch may take in the encoder process before it is restarted and the batch retried.
ENCODE_TIMEOUT = 60.0
#: Rows per batch handed to the encoder process: its memory grows with the batch (~5 KB a row while
#: converting), and a backlog of ``max_buffer_rows`` in one batch would take a gigabyte beside the server.
ENCODE_MAX_ROWS = 20_000
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


@dataclass(frozen=True, slots=True)
class _File:
    """One encoded Parquet file waiting to be stored; its key is fixed, so a retry rewrites the same object."""

    key: str
    rows: int
    data: bytes


class InferenceLog:
    """Buffers scored requests as pickled records and writes them as Parquet from a background thread.

    ``append`` never does I/O, never encodes and never waits for a write; the writer thread hands each
    batch to the encoder process and stores the files it returns. ``flush`` writes now; ``close`` stops the
    writer and writes what is left within ``serving.inference_log.shutdown_timeout_seconds``. Use one
    instance per serving process and close it on shutdown.
    """

    def __init__(
        self, storage: Storage, config: Config, *, clock: Callable[[], datetime] | None = None, writer: str = ""
    ) -> None:
        self._storage = storage
        self._writer = f"{writer}-" if writer else ""  # in every file name: sibling workers' never coincide
        self._settings = config.serving.inference_log
        self._schema = inference_log_schema(config)
        self._prefix = log_prefix(config)
        # a record's columns: the schema's after the per-request fields, in order
        self._index = {f.name: i - PER_REQUEST for i, f in enumerate(self._schema) if f.name not in _ADDED}
        self._clock = clock or (lambda: datetime.now(UTC))
        model = config.training.model_name
        self._written, self._dropped, self._errors = (
            c.labels(model=model) for c in (ROWS_WRITTEN, ROWS_DROPPED, WRITE_ERRORS)
        )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one writer at a time: the thread, flush() or close()
        self._records: list[tuple[int, bytes]] = []  # (rows, record): untracked by the GC once collected
        self._pending_rows = 0  # rows in _records
        self._oldest = 0.0  # time.monotonic() of the oldest record, for the age trigger
        self._files: deque[_File] = deque()  # encoded, not yet stored (only touched under _write_lock)
        self._held_rows = 0  # records + being encoded + files: what the bound counts
        self._retry_at = 0.0  # after a failed write, the thread waits until then
        self._closed = False
        self._deadline = float("inf")  # set by close(): the final flush gives up then
        self._last_drop_warning = -float("inf")
        self._encoder = Encoder(self._schema)
        self._thread: threading.Thread | None = None
        if self._settings.enabled:
            self._encoder.start()
            self._thread = threading.Thread(target=self._run, name=f"inference-log-{model}", daemon=True)
            self._thread.start()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory (waiting, being encoded or written)."""
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

        Costs a copy of the values into one pickled record (~10 µs for a one-row request). Raises
        ``ValueError`` / ``TypeError`` for a caller bug (unknown column, unequal lengths); rows that do not
        fit the buffer are dropped and counted, never waited for.
        """
        if not self._settings.enabled:
            return
        unknown = [c for c in columns if c not in self._index]
        if unknown:
            raise ValueError(f"inference log: unknown column(s) {', '.join(map(repr, unknown))}")
        values: list[list | None] = [None] * len(self._index)
        rows = -1
        for name, column in columns.items():
            if column is None:
                continue
            snap = _snapshot(name, column)
            if rows not in (-1, len(snap)):
                given = {k: len(_snapshot(k, v)) for k, v in columns.items() if v is not None}
                raise ValueError(f"inference log: columns differ in length: {given}")
            rows = len(snap)
            values[self._index[name]] = snap
        if rows <= 0:
            return
        try:
            stamp = (self._clock().astimezone(UTC) - EPOCH) // MICROSECOND
            data = record((stamp, request_id, model_version, protocol, rows, tuple(values)))
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
            self._drop(rows, f"request {request_id}: values cannot be logged ({err})")
            return
        with self._lock:
            accepted = not self._closed and self._held_rows + rows <= self._settings.max_buffer_rows
            if accepted:
                if not self._records:
                    self._oldest = time.monotonic()
                self._records.append((rows, data))
                self._pending_rows += rows
                self._held_rows += rows
                if len(self._records) == 1 or self._pending_rows >= self._settings.flush_rows:
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
        if self._files:
            due = now
        elif not self._records:
            return self._settings.flush_seconds
        elif self._pending_rows >= self._settings.flush_rows:
            due = now
        else:
            due = self._oldest + self._settings.flush_seconds
        return max(due, self._retry_at) - now

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (wait := self._due_in(time.monotonic())) > 0:
                    self._wake.wait(wait)
                if self._closed:
                    break
            self._cycle()
        while time.monotonic() < self._deadline:  # the final flush: retried until close's bound
            if self._cycle():
                return
            time.sleep(max(0.0, min(0.5, self._deadline - time.monotonic())))

    def _cycle(self) -> bool:
        try:
            self._write_pending()
            return True
        except StorageError:
            return False  # logged and counted; the rows wait for the next cycle
        except Exception:  # never let the writer die: the request path would fill the buffer for good
            log.exception("inference log writer: unexpected error")
            return False

    def flush(self) -> None:
        """Write everything buffered now; raises ``StorageError`` if storage fails (the rows are kept)."""
        if self._settings.enabled:
            self._write_pending()

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._lock:
                batch, self._records = self._records, []
                self._pending_rows = 0
            start = 0
            while start < len(batch):  # in chunks of at most ENCODE_MAX_ROWS (at least one request each)
                end, rows = start + 1, batch[start][0]
                while end < len(batch) and rows + batch[end][0] <= ENCODE_MAX_ROWS:
                    rows, end = rows + batch[end][0], end + 1
                self._encode(batch[start:end], batch[end:])
                start = end
            while self._files:
                self._store(self._files[0])
                self._files.popleft()

    def _encode(self, batch: list[tuple[int, bytes]], rest: list[tuple[int, bytes]]) -> None:
        """The batch → files (in the encoder process: this thread waits without the GIL); on failure the
        batch and the ``rest`` not encoded yet go back to the buffer."""
        remaining = self._deadline - time.monotonic()
        try:
            days, rejected = self._encoder.encode([data for _, data in batch], min(ENCODE_TIMEOUT, remaining))
        except EncoderError as err:
            with self._lock:  # put the batch back, oldest first, ahead of rows appended meanwhile
                self._records[:0] = batch + rest
                self._pending_rows += sum(rows for rows, _ in batch + rest)
                self._oldest = time.monotonic()
                self._retry_at = time.monotonic() + self._settings.flush_seconds
            self._errors.inc()
            log.error("inference log: encoding %d requests failed, will retry: %s", len(batch), err)
            raise StorageError(str(err)) from err
        stamp = f"{self._clock().astimezone(UTC):%Y%m%dT%H%M%S%fZ}"
        for day in days:
            key = f"{self._prefix}/date={day.day.isoformat()}/{stamp}-{self._writer}{uuid.uuid4().hex[:8]}.parquet"
            self._files.append(_File(key, day.rows, day.parquet))
        for bad in rejected:
            log.error("inference log: dropping request %s (%d rows): %s", bad.request_id, bad.rows, bad.reason)
        if rejected:
            lost = sum(bad.rows for bad in rejected)
            with self._lock:
                self._held_rows -= lost
            self._drop(lost, "values do not fit the log schema (see the error above)")

    def _store(self, file: _File) -> None:
        try:
            self._storage.write_bytes(file.key, file.data)
        except Exception as err:
            self._errors.inc()
            with self._lock:
                self._retry_at = time.monotonic() + self._settings.flush_seconds
            log.error("inference log: writing %d rows to %s failed: %s", file.rows, self._storage.uri(file.key), err)
            raise StorageError(f"{self._storage.uri(file.key)}: inference log write failed: {err}") from err
        self._written.inc(file.rows)
        with self._lock:
            self._held_rows -= file.rows
            self._retry_at = 0.0

    def close(self, timeout: float | None = None) -> None:
        """Stop the writer and write what is left; idempotent.

        Bounded by ``timeout`` (default ``serving.inference_log.shutdown_timeout_seconds``, which the pod's
        termination grace period covers): rows still unwritten then — storage down or hung — are counted
        as dropped and logged as lost, and shutdown goes on.
        """
        bound = self._settings.shutdown_timeout_seconds if timeout is None else timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + bound
            self._wake.notify_all()
        if self._thread is None:
            return
        self._thread.join(bound)
        if self._thread.is_alive():
            self._encoder.kill()  # an encode still waiting ends now; a write hung in storage is left behind
        else:
            self._encoder.close()
        lost = self.buffered_rows
        if lost:
            self._dropped.inc(lost)
            log.error(
                "inference log %s: %d rows lost: not written within the shutdown bound of %g s",
                self._storage.uri(self._prefix),
                lost,
                bound,
            )

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
