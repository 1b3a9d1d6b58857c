"""The max-rate search of the serving benchmark: the highest constant rate a target holds at p99 ≤ a limit.

Why steps of several seconds and a retry: the Python servers measured stop for 100-300 ms whenever the
garbage collector walks their whole heap (hundreds of thousands of objects after importing torch,
Feast and pandas). One such pause in a step sends that step's p99 far past 10 ms, and when pauses come
depends on how fast the server allocates. A step of ≥ ``step_seconds`` and ≥ ``min_requests``, failed
only when a retry fails too, measures a rate at which the pauses are rare, not whether one happened to
fall into a 2-second window. ``max_latency`` of each step shows the pauses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.serving_load import LoadGenerator, LoadResult, LoadSpec, Target


@dataclass(frozen=True)
class Step:
    """One step: the offered rate, what came back, and the server's CPU seconds per request (if probed)."""

    rate: float
    count: int
    p50: float
    p99: float
    max_latency: float
    errors: int
    lag_p99: float
    cpu_per_request: float | None
    passed: bool
    why: str


@dataclass(frozen=True)
class Search:
    """The highest offered rate that passed (0 if none did) and every step on the way."""

    max_rate: float
    steps: tuple[Step, ...]

    def at_max(self) -> Step | None:
        """The last passing step at the max rate (its latencies and CPU describe the max)."""
        return next((s for s in reversed(self.steps) if s.passed and s.rate == self.max_rate), None)


@dataclass(frozen=True)
class SearchPolicy:
    """Pass = no errors, p99 ≤ ``p99_limit`` and the generator on schedule (dispatch lag p99 ≤ ``max_lag``;
    the baseline is ~1 ms of timer granularity)."""

    p99_limit: float = 0.010
    step_seconds: float = 4.0
    min_requests: int = 400
    start_rate: float = 50.0
    max_rate: float = 50_000.0
    growth: float = 2.0
    refine: int = 3  # bisection steps between the last pass and the first failure
    max_lag: float = 0.005
    pause: float = 0.3  # seconds between steps, so a failed step's backlog drains

    def count(self, rate: float) -> int:
        return max(self.min_requests, int(rate * self.step_seconds))

    def judge(self, r: LoadResult, cpu_per_request: float | None = None) -> Step:
        p50, p99, lag = r.p(50), r.p(99), r.lag(99)
        if r.errors:
            why = f"{r.errors} errors ({r.first_error})"
        elif p99 > self.p99_limit:
            why = f"p99 {p99 * 1e3:.1f} ms"
        elif lag > self.max_lag:
            why = f"generator behind (lag p99 {lag * 1e3:.1f} ms)"
        else:
            why = "ok"
        worst = max(r.latencies, default=float("inf"))
        return Step(r.rate, r.count, p50, p99, worst, r.errors, lag, cpu_per_request, why == "ok", why)


def find_max_rate(
    gen: LoadGenerator,
    target: Target,
    policy: SearchPolicy = SearchPolicy(),
    cpu_seconds: Callable[[], float | None] | None = None,
) -> Search:
    """Grow the rate geometrically until a step fails (confirmed by a retry), then bisect between the last
    pass and that failure. ``cpu_seconds`` (the server's CPU time so far) gives each step's CPU/request."""
    steps: list[Step] = []

    def attempt(rate: float) -> bool:
        for _ in range(2):
            before = cpu_seconds() if cpu_seconds else None
            result = gen.run(LoadSpec(target, rate, policy.count(rate)))
            after = cpu_seconds() if cpu_seconds else None
            cpu = (after - before) / result.count if before is not None and after is not None else None
            step = policy.judge(result, cpu)
            steps.append(step)
            time.sleep(policy.pause)
            if step.passed:
                return True
            if step.errors and "HTTP" in step.why:
                return False  # the server refuses this request: retrying will not help
        return False

    good, bad = 0.0, None
    rate = policy.start_rate
    while rate <= policy.max_rate:
        if not attempt(rate):
            bad = rate
            break
        good = rate
        rate *= policy.growth
    if bad is not None:  # from 0 when even the start rate failed
        for _ in range(policy.refine):
            mid = (good + bad) / 2
            if attempt(mid):
                good = mid
            else:
                bad = mid
    return Search(good, tuple(steps))
