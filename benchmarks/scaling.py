"""Scaling curves (``--sizes``): one benchmark at several row counts, how time and peak memory grow.

Why a growth exponent: a ratio of times alone hides whether a stage is linear. Between two sizes
``n1 < n2`` the exponent is ``log(t2/t1) / log(n2/n1)``: about 1 for linear work, 2 for quadratic, below
1 while fixed costs still dominate. Peak memory gets the same exponent, so an unbounded buffer (memory
growing with rows where it should stay flat or grow slower) shows as plainly as a superlinear join.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.harness import Benchmark, CaseResult, Report, run_benchmark

#: A growth exponent above this is called out as faster than linear (noise on 2 cores stays below it).
SUPERLINEAR = 1.2


@dataclass(frozen=True)
class Point:
    """One case at one size."""

    case: str
    role: str
    rows: int
    seconds: float
    peak_rss: int | None


def parse_sizes(text: str) -> list[int]:
    """``"100k,1M,5M"`` or ``"100000,1000000"`` → sorted distinct row counts (k/M suffixes allowed)."""
    out = set()
    for raw in text.split(","):
        part = raw.strip().lower().replace("_", "")
        if not part:
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        digits = part[:-1] if scale > 1 else part
        try:
            value = int(float(digits) * scale)
        except ValueError:
            raise ValueError(f"--sizes: {part!r} is not a row count (e.g. 100k,1M,5M)") from None
        if value < 1:
            raise ValueError(f"--sizes: {part!r} must be at least 1 row")
        out.add(value)
    if len(out) < 2:
        raise ValueError("--sizes needs at least two distinct sizes, e.g. --sizes 100k,1M")
    return sorted(out)


def exponent(n1: int, v1: float | None, n2: int, v2: float | None) -> float | None:
    """Growth exponent of ``v`` between sizes ``n1 < n2`` (None when either value is missing or zero)."""
    if not v1 or not v2 or v1 <= 0 or v2 <= 0 or n2 <= n1:
        return None
    return math.log(v2 / v1) / math.log(n2 / n1)


def points(report: Report, rows: int) -> list[Point]:
    def best(r: CaseResult) -> float:
        return min(r.times)

    return [Point(r.name, r.role, rows, best(r), r.peak_rss) for r in report.results]


def run_sizes(
    build: Callable[[int], Benchmark], sizes: Sequence[int], repeat: int, echo: Callable[[str], None] | None = None
) -> list[Point]:
    """Build and run the benchmark once per size (fastest of ``repeat`` runs per case)."""
    out: list[Point] = []
    for rows in sizes:
        if echo:
            echo(f"-- {rows:,} rows")
        out.extend(points(run_benchmark(build(rows), repeat=repeat, echo=echo), rows))
    return out


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def _exp(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_scaling(name: str, pts: Sequence[Point]) -> str:
    """One table: each case at each size, with the time and memory exponents from the previous size and a
    note where time grows faster than linearly or memory grows with rows."""
    header = ["case", "role", "rows", "time s", "rows/s", "peak MB", "time exp", "mem exp", "note"]
    table = [header]
    notes: list[str] = []
    for case in dict.fromkeys(p.case for p in pts):
        series = [p for p in pts if p.case == case]
        prev: Point | None = None
        for p in series:
            t_exp = exponent(prev.rows, prev.seconds, p.rows, p.seconds) if prev else None
            m_exp = exponent(prev.rows, prev.peak_rss, p.rows, p.peak_rss) if prev else None
            note = []
            if t_exp is not None and t_exp > SUPERLINEAR:
                note.append("time superlinear")
            if m_exp is not None and m_exp > SUPERLINEAR:
                note.append("memory superlinear")
            if note:
                notes.append(f"{case} at {p.rows:,} rows: {', '.join(note)}")
            speed = f"{p.rows / p.seconds:,.0f}" if p.seconds > 0 else "-"
            table.append(
                [
                    case,
                    p.role,
                    f"{p.rows:,}",
                    f"{p.seconds:.3f}",
                    speed,
                    _mb(p.peak_rss),
                    _exp(t_exp),
                    _exp(m_exp),
                    "; ".join(note),
                ]
            )
            prev = p
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"{name}: scaling (fastest run per case; exponent 1 = linear, from the previous size)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.append("all cases grow at most linearly" if not notes else "called out: " + " | ".join(notes))
    return "\n".join(lines)
