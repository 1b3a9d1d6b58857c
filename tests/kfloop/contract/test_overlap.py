"""The validate engine's read-ahead and write-behind threads: order kept, bounded, errors raised in the caller, and
both threads gone afterwards, however the caller leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from kfloop.contract.overlap import WriteBehind, read_ahead


def helper_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("kfloop-")}


class Source:
    """A generator-like source that records how far it was read and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.made, self.closed = n, fail_at, 0, False

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.made == self.fail_at:
            raise OSError(f"unreadable item {self.made}")
        if self.made == self.n:
            raise StopIteration
        self.made += 1
        return self.made - 1

    def close(self) -> None:
        self.closed = True


def test_read_ahead_keeps_order_runs_at_most_depth_ahead_and_closes_the_source() -> None:
    source = Source(50)
    got = []
    for item in read_ahead(source, depth=2):
        time.sleep(0.001)
        assert source.made <= item + 1 + 2 + 1  # the consumer's item, the queue, the one being put
        got.append(item)
    assert got == list(range(50)) and source.closed
    assert not helper_threads()


def test_read_ahead_raises_the_source_error_in_the_caller() -> None:
    source = Source(50, fail_at=7)
    got = []
    with pytest.raises(OSError, match="unreadable item 7"):
        for item in read_ahead(source):
            got.append(item)
    assert got == list(range(7)) and source.closed and not helper_threads()


def test_read_ahead_stops_when_the_caller_fails() -> None:
    source = Source(10_000)
    with pytest.raises(ValueError, match="check failed"), closing(read_ahead(source)) as items:
        for item in items:
            if item == 3:
                raise ValueError("check failed")
    assert source.closed and source.made < 10 and not helper_threads()


def test_write_behind_runs_in_order_one_at_a_time_and_waits_at_exit() -> None:
    done: list[int] = []
    running = []
    with WriteBehind() as behind:
        for i in range(20):

            def write(i: int = i) -> None:
                running.append(i)
                assert len(running) == 1  # never two writes at once
                time.sleep(0.001)
                done.append(i)
                running.pop()

            behind.submit(write)
    assert done == list(range(20)) and not helper_threads()


def test_write_behind_raises_a_write_error_at_the_next_submit() -> None:
    done: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WriteBehind() as behind:
        behind.submit(fail)
        behind.submit(lambda: done.append(1))
    assert done == [] and not helper_threads()


def test_write_behind_lets_the_caller_error_win() -> None:
    def slow_fail() -> None:
        time.sleep(0.01)
        raise OSError("write failed too")

    with pytest.raises(ValueError, match="caller"), WriteBehind() as behind:
        behind.submit(slow_fail)
        raise ValueError("caller")
    assert not helper_threads()
