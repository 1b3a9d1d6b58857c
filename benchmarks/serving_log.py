"""What the inference log costs a request: ``kfloop serve`` with the log on (the default) and off, side by side.

Two ``kfloop serve`` processes on the same champion and workspace, one with
``serving.inference_log.enabled: false``. Each is driven closed-loop (benchmarks/serving_closed.py, like
``wrk -c1`` / ``-c4``) with one-row V1 and V2 REST requests, the eight cases interleaved round by round
(rotating order) so machine noise hits both servers alike. The summary gives p50/p99 per case and
p99 on ÷ p99 off; the aim is ≤ 1.5x at one and at four connections. The log-on server writes a file every
``flush_rows`` (5,000) requests, about one per case run, so p99 covers flushes.

Part of the full serving benchmark; alone (about 4 minutes, no MLServer) with
``KFLOOP_BENCH_SERVING=log python -m benchmarks serving --repeat 1``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import Benchmark, Case, percentile
from benchmarks.serving_closed import ClosedSpec
from benchmarks.serving_load import LoadGenerator, Target
from benchmarks.serving_payloads import Row, v1_target, v2_target

CONNECTIONS = (1, 4)
REQUESTS = {1: 3_000, 4: 4_000}  # per case and round: a few seconds each
ROUNDS = 3
AIM = 1.5  # p99 with the log ≤ this x p99 without


@dataclass(frozen=True)
class LogCase:
    protocol: str
    connections: int
    log: bool
    target: Target

    @property
    def label(self) -> str:
        return f"{self.protocol} c={self.connections} log {'on' if self.log else 'off'}"


def config_without_log(config_path: Path) -> Path:
    """The same config with the inference log disabled, beside it."""
    data = yaml.safe_load(config_path.read_text())
    data.setdefault("serving", {}).setdefault("inference_log", {})["enabled"] = False
    out = config_path.with_name("kfloop-nolog.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def log_cases(on_port: int, off_port: int, model: str, rows: Sequence[Row]) -> list[LogCase]:
    """V1 and V2 one-row requests at 1 and 4 connections, to the server with the log and to the one without."""
    out = []
    for protocol, make in (("V1", v1_target), ("V2", v2_target)):
        for connections in CONNECTIONS:
            for log, port in ((True, on_port), (False, off_port)):
                out.append(LogCase(protocol, connections, log, make(port, model, rows)))
    return out


def _spec(case: LogCase) -> ClosedSpec:
    return ClosedSpec(case.target, case.connections, REQUESTS[case.connections])


def compare(
    gen: LoadGenerator, cases: Sequence[LogCase], echo: Callable[[str], None], rounds: int = ROUNDS
) -> dict[str, Any]:
    """Interleaved closed-loop rounds; prints the side-by-side table and returns its numbers."""
    for case in cases:
        gen.run(ClosedSpec(case.target, case.connections, 300))  # warm-up
    latencies: dict[str, list[float]] = {c.label: [] for c in cases}
    errors = dict.fromkeys(latencies, 0)
    for r in range(rounds):
        for k in range(len(cases)):
            case = cases[(r + k) % len(cases)]
            result = gen.run(_spec(case))
            latencies[case.label] += result.latencies
            errors[case.label] += result.errors
    stats = {
        label: {"p50_ms": percentile(v, 50) * 1e3, "p99_ms": percentile(v, 99) * 1e3, "calls": len(v)}
        for label, v in latencies.items()
        if v
    }
    lines = [
        f"inference log cost: one-row requests, closed loop, {rounds} interleaved rounds "
        f"({', '.join(f'{REQUESTS[c]:,} at c={c}' for c in CONNECTIONS)} requests per round)",
        "| protocol, connections | log on p50 / p99 ms | log off p50 / p99 ms | p99 on ÷ off |",
        "|---|---|---|---|",
    ]
    verdicts = []
    for on, off in zip(cases[::2], cases[1::2], strict=True):
        a, b = stats.get(on.label), stats.get(off.label)
        if a is None or b is None:
            continue
        ratio = a["p99_ms"] / b["p99_ms"]
        stats[on.label]["p99_vs_off"] = ratio
        verdicts.append(ratio <= AIM)
        lines.append(
            f"| {on.protocol}, c={on.connections} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | "
            f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {ratio:.2f}x |"
        )
    met = bool(verdicts) and all(verdicts)
    lines.append(f"aim p99 with the log ≤ {AIM:g}x without, at 1 and 4 connections: {'met' if met else 'MISSED'}")
    if any(errors.values()):
        lines.append(f"errors: {errors}")
    echo("\n".join(lines))
    return {"cases": stats, "errors": errors, "aim": AIM, "aim_met": met, "rounds": rounds}


def harness_cases(gen: LoadGenerator, cases: Sequence[LogCase]) -> list[Case[Any]]:
    """The same runs as harness cases (log on = ours, log off = floor), for its own interleaved repeats."""

    def runner(case: LogCase) -> Callable[[Any], list[float]]:
        return lambda _: gen.run(_spec(case)).latencies

    return [Case(c.label, "ours" if c.log else "floor", runner(c)) for c in cases]


def build_log_only(rows: int, seed: int, echo: Callable[[str], None]) -> Benchmark:
    """The quick mode: a demo workspace, the two servers, the comparison; no MLServer, no rate searches."""
    import os

    from benchmarks import serving as full
    from benchmarks import serving_targets as st
    from benchmarks.redis_server import free_port
    from kfloop.feature_repo.online import ServingLookup
    from kfloop.feature_repo.store import open_store
    from kfloop.serving.clock import serving_clock
    from kfloop.storage import LocalStorage

    work = Path(tempfile.mkdtemp(prefix="kfloop-bench-serving-log-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    echo(f"  workspace {work}: demo data + kfloop run ({rows:,} rows)")
    ws = full.prepare_workspace(rows, seed, work)
    store = open_store(ws.config, LocalStorage(work / "ws"), os.environ)
    lookup = ServingLookup(
        store,
        ws.config.features.service,
        clock=serving_clock(os.environ),  # build() pins it
        full_feature_names=ws.config.features.naming == "full",
    )
    req = full.request_rows(ws, lookup, full.DISTINCT_REQUESTS, seed)
    (on_http, on_grpc), (off_http, off_grpc) = (free_port(), free_port()), (free_port(), free_port())
    procs = [
        st.ours(ws.config_path, on_http, on_grpc, work / "logs" / "kfloop-serve.log"),
        st.ours(config_without_log(ws.config_path), off_http, off_grpc, work / "logs" / "kfloop-serve-nolog.log"),
    ]
    for proc in procs:
        atexit.register(proc.stop)
        proc.start()
    name = ws.config.training.model_name
    cases = log_cases(on_http, off_http, name, req.full)
    for i in range(5):  # both answer, with the same score
        scores = {c.label: full.ask(c.target, i)[0]["score"][0] for c in cases[:2]}
        if abs(scores[cases[0].label] - scores[cases[1].label]) > 1e-5:
            raise AssertionError(f"row {i}: log on and off disagree: {scores}")
    gen = LoadGenerator()
    atexit.register(gen.close)
    data = compare(gen, cases, echo)
    on_rss, off_rss = ((p.rss() or 0) / 2**20 for p in procs)
    echo(f"  server RSS: log on {on_rss:,.0f} MB (the encoder process not included), log off {off_rss:,.0f} MB")
    return Benchmark(
        "serving",
        "inference log on vs off (quick mode): one-row closed-loop requests; log off = floor",
        harness_cases(gen, cases),
        params={"mode": "log", "demo_rows": rows, "seed": seed, "inference_log": data},
    )
