"""Closed-loop load (``wrk -cN`` style) for the serving benchmark: N connections, each sending its next
request as soon as the previous answer arrived.

Why besides the open-loop generator: a closed loop with one connection measures one request's latency on
an otherwise idle server, which is where a stall of the serving process (a flush holding the GIL, a
garbage-collector pause) shows up undiluted in p99; four connections add the queueing behind such a stall.
It reuses the open-loop generator's clients and worker process (pre-encoded requests, one cheap HTTP
client), so both loops cost the machine the same per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from benchmarks.serving_load import LoadResult, LoadSpec, Target, loop_factory, make_client


@dataclass(frozen=True)
class ClosedSpec:
    """``count`` requests over ``connections`` back-to-back senders (HTTP connections, or concurrent calls
    on one gRPC channel)."""

    target: Target
    connections: int
    count: int
    timeout: float = 10.0


async def _run_closed(spec: ClosedSpec) -> LoadResult:
    target = spec.target
    pool = LoadSpec(target, 1.0, spec.count, spec.connections, spec.connections, spec.timeout)
    client = make_client(target, pool)
    await client.start()
    clock = time.perf_counter
    result = LoadResult(0.0, spec.count)
    latencies: list[tuple[int, float]] = []
    issued = 0

    async def sender() -> None:
        nonlocal issued
        while issued < spec.count:
            i, issued = issued, issued + 1
            t0 = clock()
            try:
                await asyncio.wait_for(client.send(i), spec.timeout)
            except Exception as err:  # counted; the sender goes on with the next request
                result.errors += 1
                result.first_error = result.first_error or str(err) or type(err).__name__
                continue
            latencies.append((i, clock() - t0))

    start = clock()
    await asyncio.gather(*(sender() for _ in range(spec.connections)))
    result.elapsed = clock() - start
    result.latencies = [lat for _, lat in sorted(latencies)]
    result.rate = result.achieved_rps
    result.connections = await client.close()
    return result


def run_closed(spec: ClosedSpec) -> LoadResult:
    """One closed-loop run in this process (on the same event loop as the open loop)."""
    if spec.connections < 1 or spec.count < 1:
        raise ValueError(f"connections and count must be positive, got {spec.connections} and {spec.count}")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run_closed(spec))
