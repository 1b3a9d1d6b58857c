"""Reading, checking and writing on separate threads, so the stages of one validate run overlap on two cores.

Arrow's Parquet reader and writer and its compute kernels release the GIL, so a batch being read and the last
one being written cost the checks of the current batch little. Order is kept (one reader, one writer thread)
and memory stays bounded: the reader runs at most ``depth`` batches ahead, and the writer takes a new batch only
once the last one is written. An error on either thread is raised in the caller, which then stops both.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def read_ahead(source: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield ``source``'s items, produced on a thread that runs up to ``depth`` items ahead. Closing this
    iterator early (or an error in the caller) stops the thread and closes ``source`` there."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    break
            else:
                put((_DONE, None))
        except BaseException as err:  # handed to the caller, raised there
            put((_DONE, err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="kfloop-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = slots.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class WriteBehind:
    """Run write calls on one thread, in submission order, at most one pending: :meth:`submit` waits for the
    previous call (raising its error) before handing over the next. Use as a context manager; leaving it waits
    for the last call."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfloop-write-behind")
        self._pending: Future[None] | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let it finish; the caller's error is the one raised
        finally:
            self._pool.shutdown(wait=True)
