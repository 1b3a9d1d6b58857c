"""The serving benchmark's report: who is measured (names, aims, the search policy), reading the server's
Prometheus histograms, and the max-rate table with its ratios and aims (text and JSON)."""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Role
from benchmarks.serving_load import Target
from benchmarks.serving_search import Search, SearchPolicy

LOAD_FRACTION = 0.5
POLICY = SearchPolicy(p99_limit=0.010, step_seconds=4.0, min_requests=400, start_rate=50.0)
#: ``KFLOOP_BENCH_QUICK=1``: short steps, one bisection, fewer timed calls, no inference-log comparison: to
#: check that every target runs (its rates are rough; the benchmark's numbers come from a full run).
QUICK_ENV = "KFLOOP_BENCH_QUICK"
QUICK_POLICY = SearchPolicy(p99_limit=0.010, step_seconds=1.0, min_requests=150, start_rate=100.0, refine=1)
#: Aims from the issue, printed next to the results.
AIM_VS_MLSERVER, AIM_VS_PAIR, AIM_GRPC_VS_REST, AIM_LOOKUP_P99 = 1.0, 2.0, 1.0, 0.001

V1, V2, GRPC = "V1 REST", "V2 REST", "gRPC"
FULL, MODEL, PEER = "ours lookup+model", "ours model only", "MLServer model"
FULL_W2, MODEL_W2 = "ours lookup+model, 2 workers", "ours model only, 2 workers"
PAIR = "Feast server + MLServer"  # two hops per request: /get-online-features, then MLServer's V2 infer
ECHO, HELLO = "KServe echo", "uvicorn hello"


def quick() -> bool:
    return os.environ.get(QUICK_ENV) == "1"


def policy() -> SearchPolicy:
    """The rate search's policy (:data:`QUICK_POLICY` with ``KFLOOP_BENCH_QUICK=1``)."""
    return QUICK_POLICY if quick() else POLICY


@dataclass(frozen=True)
class Contender:
    """One (server, protocol) pair measured."""

    group: str
    protocol: str
    role: Role
    server: str
    target: Target
    model: str  # the name in request paths / messages

    @property
    def label(self) -> str:
        return f"{self.group} {self.protocol}"


# --- metrics -------------------------------------------------------------------------------------------


def quantile_bound(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The smallest bucket bound holding quantile ``q`` (0-1) of cumulative ``(upper bound, count)`` pairs:
    what a histogram can say for sure (Prometheus' interpolation would invent values inside a bucket, e.g.
    a p50 of half the first bound when every observation is below it). None without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    return next(upper for upper, count in buckets if count >= rank)


def scrape_histogram(url: str, metric: str) -> list[tuple[float, float]]:
    """Cumulative buckets of ``metric`` (all label sets summed) from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    sums: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(metric + "_bucket{"):
            continue
        labels, value = line.rsplit(" ", 1)
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        bound = math.inf if le == "+Inf" else float(le)
        sums[bound] = sums.get(bound, 0.0) + float(value)
    return sorted(sums.items())


@dataclass
class Measured:
    contender: Contender
    search: Search


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b; infinite when only b held no rate (e.g. a peer whose latency alone is over the p99 limit)."""
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


def _x(v: float | None) -> str:
    if v is not None and math.isinf(v):
        return "∞ (the other held no rate)"
    return "-" if v is None else f"{v:.2f}x"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def _finite(v: float | None) -> float | str | None:
    """JSON has no infinity: the ratio over a target that held no rate is written as "inf"."""
    return "inf" if v is not None and math.isinf(v) else v


def summary(
    measured: Sequence[Measured], lookup: Mapping[str, float | None], rss: Mapping[str, int | None]
) -> tuple[str, dict[str, Any]]:
    """The max-rate table, the ratios and the aims (text, and the same numbers for the JSON)."""
    by = {(m.contender.group, m.contender.protocol): m.search.max_rate for m in measured}

    def rate(group: str, protocol: str) -> float | None:
        return by.get((group, protocol))

    used = policy()
    lines = [
        f"serving: max offered rate with p99 ≤ {used.p99_limit * 1e3:g} ms (open loop, 1 row per request, steps of "
        f"≥ {used.step_seconds:g} s and ≥ {used.min_requests} requests, a failure confirmed by a retry); "
        f"p50/p99 at {LOAD_FRACTION:.0%} of it in the harness table below" + (" [QUICK: rough]" if quick() else ""),
    ]
    header = ["target", "protocol", "max rps", "p50/p99/max ms at max", "CPU ms/req", "next rate failed", "server RSS"]
    table = [header]
    for m in measured:
        c, best = m.contender, m.search.at_max()
        above = [st for st in m.search.steps if not st.passed and st.rate > m.search.max_rate]
        failed = min(above, key=lambda st: st.rate, default=None)  # the lowest failing rate above the max
        mem = rss.get(c.server)
        table.append(
            [
                c.group,
                c.protocol,
                _fmt_rate(m.search.max_rate),
                "-" if best is None else f"{best.p50 * 1e3:.2f} / {best.p99 * 1e3:.2f} / {best.max_latency * 1e3:.0f}",
                "-" if best is None or best.cpu_per_request is None else f"{best.cpu_per_request * 1e3:.2f}",
                "-" if failed is None else f"{_fmt_rate(failed.rate)}: {failed.why}",
                "-" if mem is None else f"{mem / 2**20:,.0f} MB",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    right = {2, 3, 4}
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    ratios: dict[str, float | None] = {}
    for group in (FULL, FULL_W2):  # the pair: one request = Feast lookup + MLServer V2 call
        for proto in (V1, V2, GRPC):
            ratios[f"{group} ({proto}) / {PAIR}"] = _ratio(rate(group, proto), rate(PAIR, V2))
    for proto in (V2, GRPC):
        ratios[f"ours lookup+model / MLServer ({proto})"] = _ratio(rate(FULL, proto), rate(PEER, proto))
        for group in (MODEL, MODEL_W2):
            ratios[f"{group} / MLServer ({proto})"] = _ratio(rate(group, proto), rate(PEER, proto))
    for group in (FULL, MODEL, FULL_W2, MODEL_W2):
        ratios[f"{group}: gRPC / V2 REST"] = _ratio(rate(group, GRPC), rate(group, V2))
    ratios[f"{FULL}: gRPC / V1 REST"] = _ratio(rate(FULL, GRPC), rate(FULL, V1))
    for group, one in ((FULL_W2, FULL), (MODEL_W2, MODEL)):
        for proto in (V1, V2, GRPC):
            ratios[f"{group} / 1 worker ({proto})"] = _ratio(rate(group, proto), rate(one, proto))
    for proto in (V1, V2, GRPC):
        ratios[f"ours lookup+model / KServe echo ({proto})"] = _ratio(rate(FULL, proto), rate(ECHO, proto))
    ratios["ours lookup+model V1 / uvicorn hello"] = _ratio(rate(FULL, V1), rate(HELLO, "REST"))
    lines.append("ratios of max rps:")
    lines += [f"  {k}: {_x(v)}" for k, v in ratios.items()]
    lines.append(
        f"feature lookup (ServingLookup, SQLite), ms: in-process p50 {_ms(lookup['p50'])} / p99 {_ms(lookup['p99'])}; "
        f"in the server under load (kfloop_feature_lookup_seconds, {lookup.get('server_count') or 0:,.0f} lookups) "
        f"p50 ≤ {_ms(lookup.get('server_p50_bound'))} / p99 ≤ {_ms(lookup.get('server_p99_bound'))} (bucket bounds)"
    )
    aims = []
    for proto in (V1, V2, GRPC):
        got = ratios[f"{FULL} ({proto}) / {PAIR}"]
        aims.append((f"{FULL} ({proto}) ≥ {AIM_VS_PAIR:g}x {PAIR}", got, AIM_VS_PAIR))
    for proto in (V2, GRPC):
        got = ratios[f"{MODEL} / MLServer ({proto})"]
        aims.append((f"{MODEL} ≥ {AIM_VS_MLSERVER:g}x MLServer ({proto})", got, AIM_VS_MLSERVER))
    for group in (FULL, MODEL):
        got = ratios[f"{group}: gRPC / V2 REST"]
        aims.append((f"{group}: gRPC ≥ {AIM_GRPC_VS_REST:g}x V2 REST", got, AIM_GRPC_VS_REST))
    for text, got, target in aims:
        verdict = "n/a" if got is None else ("met" if got >= target else "MISSED")
        lines.append(f"aim {text}: {_x(got)} {verdict}")
    p99 = lookup["p99"]
    verdict = "met" if p99 is not None and p99 <= AIM_LOOKUP_P99 else "MISSED"
    aim = f"feature lookup p99 ≤ {AIM_LOOKUP_P99 * 1e3:g} ms on SQLite (in-process)"
    lines.append(f"aim {aim}: {_ms(p99)} ms {verdict}")
    data = {
        "max_rps": {m.contender.label: m.search.max_rate for m in measured},
        "search_steps": {m.contender.label: [dataclasses.asdict(s) for s in m.search.steps] for m in measured},
        "ratios": {k: _finite(v) for k, v in ratios.items()},
        "aims": [{"aim": t, "achieved": _finite(g), "target": v, "met": g is not None and g >= v} for t, g, v in aims],
        "feature_lookup_s": dict(lookup),
        "server_rss_bytes": dict(rss),
    }
    return "\n".join(lines), data
