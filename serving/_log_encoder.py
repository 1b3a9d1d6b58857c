"""The inference log's encoder: logged records → one zstd Parquet file per date, in a child process.

Why a process: turning thousands of records into Arrow arrays is Python work that holds the GIL (and the
buffered objects make the garbage collector walk them), so in the serving process it stalls requests for
tens of milliseconds per flush. The serving process only pickles each request's values into one ``bytes``
record (invisible to the garbage collector) and hands a batch of them to this child over a pipe. The
child (``python -P _log_encoder.py``) decodes, converts, writes Parquet to memory and returns the files'
bytes; storage writes stay in the server. It runs niced, so on a busy machine its bursts yield the CPU to
the server, in the server's session (Linux scheduler autogroups are per session, a nice value counts only
within one) but in its own process group, so Ctrl-C reaches only the server, which ends the log.

Stdlib and pyarrow only: the child must not import the serving stack (KServe, torch) to start.
Frames on both pipes are an 8-byte big-endian length and a pickle.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["EPOCH", "MICROSECOND", "EncodedDay", "Encoder", "Rejected", "encode", "record"]

#: A record: (timestamp, request_id, model_version, protocol, rows, columns), the timestamp in microseconds
#: since the epoch (a datetime costs 4x more to pickle), columns in schema order after the per-request
#: fields, each a list of ``rows`` values or None (all null).
Record = tuple[int, str | None, str | None, str | None, int, tuple[list | None, ...]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
#: The per-request fields at the head of the schema, in record order.
PER_REQUEST = 4
_ROWS, _COLUMNS = 4, 5

#: What converting values to Arrow may raise (ArrowInvalid is a ValueError, ArrowTypeError a TypeError).
CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)
_HEADER = 8


class EncodedDay(NamedTuple):
    day: date
    rows: int
    parquet: bytes


class Rejected(NamedTuple):
    """A request whose values do not fit the schema: dropped alone, not with its batch."""

    request_id: str | None
    rows: int
    reason: str


def record(values: Record) -> bytes:
    """One request as the bytes the buffer holds (pickled: fast, and not tracked by the GC)."""
    return pickle.dumps(values, protocol=5)


# --- encoding (runs in the child; a plain function so tests can call it directly) -----------------------


def _to_arrow(values: list, type_: pa.DataType) -> pa.Array:
    """Values → one typed array; NaN becomes null. Falls back to a cast (e.g. bool label → int64)."""
    try:
        return pa.array(values, type_, from_pandas=True)
    except CONVERSION_ERRORS:
        return pa.array(values, from_pandas=True).cast(type_)


def _table(schema: pa.Schema, records: list[Record]) -> pa.Table:
    arrays = []
    for i, field in enumerate(schema):
        if i < PER_REQUEST:
            values = [r[i] for r in records for _ in range(r[_ROWS])]
        else:
            values = []
            for r in records:
                column = r[_COLUMNS][i - PER_REQUEST]
                values.extend([None] * r[_ROWS] if column is None else column)
        try:
            arrays.append(_to_arrow(values, field.type))
        except CONVERSION_ERRORS as err:
            raise type(err)(f"column {field.name!r} ({field.type}): {err}") from err
    return pa.Table.from_arrays(arrays, schema=schema)


def _convert(schema: pa.Schema, records: list[Record]) -> tuple[pa.Table, list[Rejected]]:
    """All records as one table; a record whose values do not convert is rejected alone."""
    try:
        return _table(schema, records), []
    except CONVERSION_ERRORS:
        pass
    good, bad = [], []
    for r in records:
        try:
            good.append(_table(schema, [r]))
        except CONVERSION_ERRORS as err:
            bad.append(Rejected(r[1], r[_ROWS], str(err)))
    return (pa.concat_tables(good) if good else schema.empty_table()), bad


def encode(schema: pa.Schema, batch: list[bytes]) -> tuple[list[EncodedDay], list[Rejected]]:
    """Records → one Parquet file per UTC date (oldest first) and the requests that did not fit."""
    by_day: dict[date, list[Record]] = defaultdict(list)
    for data in batch:
        r: Record = pickle.loads(data)
        by_day[(EPOCH + r[0] * MICROSECOND).date()].append(r)
    days, rejected = [], []
    for day in sorted(by_day):
        table, bad = _convert(schema, by_day[day])
        rejected += bad
        if table.num_rows:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            days.append(EncodedDay(day, table.num_rows, sink.getvalue().to_pybytes()))
    return days, rejected


# --- framing --------------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | memoryview, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
            raise TimeoutError("the encoder does not read")
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """``n`` bytes from ``fd``; b"" at a clean end of stream before the first byte."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("the encoder does not answer")
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            if got == 0:
                return b""
            raise EOFError("stream ended inside a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _send(fd: int, payload: bytes, deadline: float) -> None:
    _write_all(fd, len(payload).to_bytes(_HEADER, "big"), deadline)
    _write_all(fd, payload, deadline)


def _receive(fd: int, deadline: float | None) -> bytes | None:
    header = _read_exact(fd, _HEADER, deadline)
    if not header:
        return None
    size = int.from_bytes(header, "big")
    body = _read_exact(fd, size, deadline)
    if len(body) != size:  # the writer died between header and payload: not a clean end
        raise EOFError("stream ended inside a frame")
    return body


# --- the serving process's side -------------------------------------------------------------------------


class Encoder:
    """The child process, started on first use and again after it fails. Not thread-safe: the log's
    writer calls it under its write lock."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema.serialize().to_pybytes()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child now (its ~0.3 s start-up is then not paid by the first flush)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self.close()
        proc = subprocess.Popen(
            [sys.executable, "-P", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            process_group=0,  # Ctrl-C reaches the server only; same session, so its nice value counts
        )
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        self._proc = proc
        _send(proc.stdin.fileno(), self._schema, time.monotonic() + 10)

    def encode(self, batch: list[bytes], timeout: float) -> tuple[list[EncodedDay], list[Rejected]]:
        """Encode in the child, waiting at most ``timeout`` seconds (the GIL is free meanwhile)."""
        from kfloop.errors import EncoderError  # here, not at the top: the child runs this file stdlib-only

        deadline = time.monotonic() + timeout
        try:
            self.start()
            assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
            _send(self._proc.stdin.fileno(), pickle.dumps(batch, protocol=5), deadline)
            answer = _receive(self._proc.stdout.fileno(), deadline)
            if answer is None:
                raise EOFError(f"the encoder exited (code {self._proc.wait()})")
            result = pickle.loads(answer)
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError) as err:
            self.close()  # a half-read answer leaves the pipes out of step: a fresh child for the retry
            raise EncoderError(f"inference log encoder: {err}") from err
        if isinstance(result, BaseException):
            raise EncoderError(f"inference log encoder: {result}")
        days, rejected = result
        return [EncodedDay(*d) for d in days], [Rejected(*r) for r in rejected]

    def kill(self) -> None:
        """SIGKILL the child without touching the pipes another thread may be waiting on (it sees EOF)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def close(self, timeout: float = 2.0) -> None:
        """End the child: EOF first (it exits at once), SIGKILL when it does not."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the child ------------------------------------------------------------------------------------------


def main() -> None:
    """Encode batches from stdin until it closes; answers on the original stdout (stray prints go to stderr)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when the log ends: EOF on stdin
    with contextlib.suppress(OSError):
        os.nice(10)  # background work: the server's requests (and the load generator) come first
    out = os.dup(1)
    os.dup2(2, 1)
    first = _receive(0, None)
    if first is None:
        return
    schema = pa.ipc.read_schema(pa.py_buffer(first))
    while (frame := _receive(0, None)) is not None:
        try:
            days, rejected = encode(schema, pickle.loads(frame))
            # plain tuples: this module is ``__main__`` here, its classes would not unpickle in the server
            answer: Any = ([tuple(d) for d in days], [tuple(r) for r in rejected])
        except Exception as err:  # the server logs it and keeps the batch
            answer = RuntimeError(f"{type(err).__name__}: {err}")
        _send(out, pickle.dumps(answer, protocol=5), time.monotonic() + 3600)


if __name__ == "__main__":
    main()
