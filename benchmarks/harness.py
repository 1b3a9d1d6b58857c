"""Side-by-side benchmark runner: our path, the peer users would pick instead, and the floor.

Why one process and interleaved repeats: machine noise (other jobs, CPU boost, page cache) then hits
every contender alike, so the ratios stay meaningful even when absolute times wander.
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

Role = Literal["ours", "peer", "floor"]
ROLES: tuple[Role, ...] = ("ours", "peer", "floor")
S = TypeVar("S")

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _no_setup() -> None:
    return None


@dataclass(frozen=True)
class Case(Generic[S]):
    """One contender. ``setup`` (untimed) builds fresh state for each repeat; ``run`` is timed.

    ``run`` may return per-call latencies in seconds (for request-style benchmarks); the harness
    then reports p50/p99 over all calls of all repeats.
    """

    name: str
    role: Role
    run: Callable[[S], Sequence[float] | None]
    setup: Callable[[], S] = _no_setup  # type: ignore[assignment]
    teardown: Callable[[S], None] | None = None


@dataclass(frozen=True)
class Benchmark:
    """Cases compared in one run. ``rows`` enables rows/s; ``aims`` maps "peer" → minimum x faster
    than the fastest peer and "floor" → minimum fraction of the fastest floor's throughput."""

    name: str
    title: str
    cases: Sequence[Case[Any]]
    rows: int | None = None
    aims: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """Measurements of one case over all repeats."""

    name: str
    role: Role
    rows: int | None
    times: list[float] = field(default_factory=list)
    rss_deltas: list[int] = field(default_factory=list)  # bytes; empty where peak RSS cannot be read
    latencies: list[float] = field(default_factory=list)
    vs_peer: float | None = None  # throughput ÷ fastest peer's
    of_floor: float | None = None  # throughput ÷ fastest floor's

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def speed(self) -> float:
        """Throughput: rows/s when rows are known, else runs/s (ratios mean the same either way)."""
        return (self.rows or 1) / self.median if self.median > 0 else math.inf

    @property
    def peak_rss(self) -> int | None:
        return max(self.rss_deltas) if self.rss_deltas else None

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p) if self.latencies else None


@dataclass
class Report:
    """One run of a benchmark: its cases' results, ratios filled in."""

    benchmark: Benchmark
    repeat: int
    results: list[CaseResult]
    started: str

    def aims(self) -> list[Aim]:
        """Each declared aim with what the (first) "ours" case achieved."""
        ours = next((r for r in self.results if r.role == "ours"), None)
        out = []
        for role, target in self.benchmark.aims.items():
            got = None if ours is None else (ours.vs_peer if role == "peer" else ours.of_floor)
            label = f"ours ≥ {target:g}x peer" if role == "peer" else f"ours ≥ {target:.0%} of floor"
            out.append(Aim(role, label, target, got))
        return out


@dataclass(frozen=True)
class Aim:
    """A target ratio: vs "peer" (x faster) or of "floor" (fraction of its throughput)."""

    role: str
    label: str
    target: float
    achieved: float | None

    @property
    def met(self) -> bool:
        return self.achieved is not None and self.achieved >= self.target

    def shown(self) -> str:
        if self.achieved is None:
            return "-"
        return f"{self.achieved:.2f}x" if self.role == "peer" else f"{self.achieved:.0%}"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: always an observed value, so p99 of 100 calls is the 99th slowest."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _rss_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0) and return current RSS; None if unsupported.

    Exact and free, unlike a sampling thread or tracemalloc (which would slow the timed code).
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return None
    return _rss_bytes("VmRSS")


def _release_pools() -> None:
    """Return freed memory to the OS so each case's peak RSS starts from a comparable baseline."""
    gc.collect()
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()


def _run_once(case: Case[Any], result: CaseResult) -> None:
    state = case.setup()
    try:
        _release_pools()
        base = _reset_peak()
        t0 = time.perf_counter()
        latencies = case.run(state)
        result.times.append(time.perf_counter() - t0)
        peak = _rss_bytes("VmHWM") if base is not None else None
        if base is not None and peak is not None:
            result.rss_deltas.append(max(0, peak - base))
        if latencies:
            result.latencies.extend(latencies)
    finally:
        if case.teardown is not None:
            case.teardown(state)


def _fastest(results: list[CaseResult], role: Role) -> CaseResult | None:
    return max((r for r in results if r.role == role), key=lambda r: r.speed, default=None)


def compute_ratios(results: list[CaseResult]) -> None:
    """Fill ``vs_peer`` and ``of_floor`` against the fastest case of each role."""
    peer, floor = _fastest(results, "peer"), _fastest(results, "floor")
    for r in results:
        r.vs_peer = r.speed / peer.speed if peer else None
        r.of_floor = r.speed / floor.speed if floor else None


def run_benchmark(bench: Benchmark, repeat: int = 3, echo: Callable[[str], None] | None = None) -> Report:
    """Run every case ``repeat`` times, interleaved and in a rotating order, then compute ratios."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results = [CaseResult(c.name, c.role, bench.rows) for c in bench.cases]
    n = len(bench.cases)
    for rep in range(repeat):
        for k in range(n):
            i = (rep + k) % n  # rotate so no case always runs first (cold caches) or last
            _run_once(bench.cases[i], results[i])
            if echo:
                echo(f"  [{rep + 1}/{repeat}] {results[i].name}: {results[i].times[-1]:.3f} s")
    compute_ratios(results)
    return Report(bench, repeat, results, started)
