"""Serving benchmark: how much online traffic each server holds at p99 ≤ 10 ms, on the same machine, in one run.

Contenders (each a real server process on localhost; one request = one row):

- ours:  ``kfloop serve`` on the demo champion: the transformer (Feast online lookup on SQLite) and the
         predictor in one process, over V1 REST, V2 REST and V2 gRPC (``lookup + model``); and the same
         server's predictor-only model ``<name>-predictor``, fed the looked-up features (``model only``).
         The same again with ``serving.workers: 2`` (two processes on the same ports; its gRPC load uses
         16 channels, since the kernel gives each connection to one worker).
- peers: MLServer (its own venv, pinned) serving the SAME registry version (``model.pt`` +
         ``preprocess.json`` + threshold) with a custom runtime (benchmarks/serving_mlserver_runtime.py),
         over V2 REST and gRPC. It has no feature lookup, so it gets the looked-up features as named V2
         inputs, exactly what our ``model only`` gets.
         The pair a user would deploy instead of ours for the full path: Feast's feature server (``feast
         serve`` on the workspace's registry and online store, a real process) in front of that MLServer.
         One pair request is what its client does: POST the entity keys to Feast's
         ``/get-online-features``, build the V2 body from the answer and the request's own fields, POST it
         to MLServer; done in the load generator (benchmarks/serving_load.py ``PairTarget``), the glue
         with orjson, timed from dispatch to MLServer's answer. Fair because it is the least a client of
         the pair must do (a third service doing the glue would add a hop), on the same connections and
         clock as every other target; compare it with ``lookup + model``.
- floor: the KServe echo model (KServe's own request path, no model: benchmarks/serving_echo.py) over
         the same three protocols with ours' request bodies, and a bare uvicorn ASGI app answering a
         fixed JSON (the HTTP floor: benchmarks/serving_floor.py).

Method: an open-loop generator in its own process (benchmarks/serving_load.py: constant rate, pre-encoded
requests, the same tool for REST and gRPC) steps each target's offered rate up (x2 until a step fails,
a failure confirmed by a retry, then 3 bisections; benchmarks/serving_search.py), each step ≥ 4 s and
≥ 400 requests; a step passes with no errors, p99 ≤ 10 ms and the generator on schedule. That gives
each target's max rate, with the server's CPU time per request at it. Then the harness runs every
target at 50 % of its own max, interleaved, ``--repeat`` times: its table's p50/p99 are latencies at
half load, and its rows/s (= half the max rate) make "x peer" and "of floor" ratios of max rates.
Expect ± one bisection step between runs: p99 at 10 ms is decided by the servers' garbage-collector
pauses (see serving_search.py), which come when they come.

Untimed preparation: a demo workspace (``kfloop demo-data`` + ``kfloop run``: train, evaluate, promote,
materialize; ``--rows`` sets the demo rows), request rows from real transactions (known entities), each
row's features looked up in-process with ``ServingLookup`` (also timed alone: the feature-lookup
p50/p99), every server answer checked (ours, ours model-only and MLServer must give the same score for
the same row). ``KFLOOP_BENCH_MLSERVER=0`` skips MLServer and the pair (no venv needed); ``KFLOOP_BENCH_QUICK=1`` runs
short steps and few timed calls, without the inference-log comparison: a check that everything runs.

The inference log's cost (benchmarks/serving_log.py): a second ``kfloop serve`` with the log off, both
driven closed-loop at 1 and 4 connections, one-row V1 and V2; ``KFLOOP_BENCH_SERVING=log`` runs only that.

The harness's "peak RSS Δ" column is the benchmark process's, not the servers': the servers' resident
memory is printed in the summary.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case, percentile
from benchmarks.redis_server import free_port
from benchmarks.serving_load import GrpcTarget, LoadGenerator, LoadSpec, PairTarget, Target, pair_body
from benchmarks.serving_payloads import (
    FEAST_LOOKUP,
    Row,
    feast_lookup_body,
    grpc_outputs,
    grpc_target,
    pair_target,
    rest_target,
    v1_body,
    v1_target,
    v2_outputs,
    v2_target,
)
from benchmarks.serving_report import (
    ECHO,
    FULL,
    FULL_W2,
    GRPC,
    HELLO,
    LOAD_FRACTION,
    MODEL,
    MODEL_W2,
    PAIR,
    PEER,
    V1,
    V2,
    Contender,
    Measured,
    policy,
    quantile_bound,
    quick,
    scrape_histogram,
    summary,
)
from benchmarks.serving_search import find_max_rate
from benchmarks.serving_targets import ServerProcess, ensure_mlserver_venv
from kfloop.config import ColumnType, Config, load_config, parse_config
from kfloop.demo import DEFAULT_START
from kfloop.serving.clock import AS_OF_ENV, serving_clock
from kfloop.storage import LocalStorage

CONFIG_PATH = ROOT / "examples" / "fraud" / "kfloop.yaml"
DEMO_ROWS = 20_000  # 400 customers, 100 merchants online; training takes ~30 s
SEED = 42
DISTINCT_REQUESTS = 128  # rows cycled through by every target
CALLS = 1_000  # requests per harness run (at 50 % of the target's max rate)
QUICK_CALLS = 300
#: gRPC channels of the load on a server of several workers (each channel is one connection, on one worker).
WORKER_CHANNELS = 16
LOOKUP_CALLS = 2_000
#: The end of `kfloop demo-data`'s 90 days: every server answers as of it (a replay; on the wall clock the
#: demo's rows are older than their views' ttls and every row would be scored on default features).
DEMO_END = DEFAULT_START + timedelta(days=90)


# --- the workspace ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A demo workspace with a champion and materialized online features."""

    work: Path
    config: Config
    config_path: Path
    source: Path


def prepare_workspace(rows: int, seed: int, work: Path) -> Workspace:
    """``kfloop demo-data`` then ``kfloop run`` (the Makefile's ``run``) in ``work``, logs in ``work``."""
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    source = work / "transactions.csv"
    data["storage"] = {"type": "local", "root": str(work / "ws")}
    data["source"]["uri"] = str(source)
    config = parse_config(data, "serving benchmark")
    config_path = work / "kfloop.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    kfloop = [sys.executable, "-m", "kfloop"]
    for args in (["demo-data", "--rows", str(rows), "--seed", str(seed), "--out", str(source)], ["run"]):
        log = work / f"{args[0]}.log"
        with open(log, "wb") as out:
            cmd = [*kfloop, *args, "-c", str(config_path)]
            proc = subprocess.run(cmd, cwd=work, stdout=out, stderr=out, check=False)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"kfloop {args[0]} failed (code {proc.returncode}); {log}:\n{tail}")
    return Workspace(work, config, config_path, source)


def champion_dir(ws: Workspace, dest: Path) -> tuple[str, Path]:
    """(version, directory) of the champion's files as the registry hands them out, card included."""
    from kfloop.registry import ModelRegistry

    registry = ModelRegistry(LocalStorage(ws.work / "ws"), ws.config.training.model_name)
    champion = registry.champion()
    if champion is None:
        raise RuntimeError("the demo run promoted no champion")
    registry.fetch(champion.version, dest)
    (dest / "model.json").write_text(json.dumps(champion.card, default=str))
    return champion.version, dest


# --- request rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requests:
    """Matching rows: ``full[i]`` is what a client sends the transformer, ``model[i]`` the same row with its
    features looked up (what the predictor and MLServer get)."""

    full: list[dict[str, Any]]
    model: list[dict[str, Any]]


def _typed(value: Any, column_type: ColumnType) -> Any:
    if column_type is ColumnType.INT64:
        return int(value)
    if column_type is ColumnType.FLOAT64:
        return float(value)
    return str(value)


def request_rows(ws: Workspace, lookup: Any, n: int, seed: int) -> Requests:
    """``n`` real transactions (known entities) whose looked-up features are all present."""
    import pandas as pd

    from kfloop.training.preprocess import feature_columns

    cfg = ws.config
    columns = [*cfg.source.entity_keys, *cfg.features.request_features]
    frame = pd.read_csv(ws.source, usecols=columns).dropna()
    numeric, categorical = feature_columns(cfg)
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)
    full, model = [], []
    for i in order:
        raw = frame.iloc[i]
        row = {c: _typed(raw[c], cfg.source.columns[c]) for c in columns}
        values = {**lookup.get({k: row[k] for k in cfg.source.entity_keys}), **row}
        if any(values.get(c) is None or (isinstance(values[c], float) and math.isnan(values[c])) for c in numeric):
            continue
        full.append(row)
        model.append({**{c: float(values[c]) for c in numeric}, **{c: str(values[c]) for c in categorical}})
        if len(full) == n:
            break
    if len(full) < n:
        raise RuntimeError(f"only {len(full)} of {n} request rows have every feature online")
    return Requests(full, model)


def time_lookup(lookup: Any, rows: Sequence[Row], entity_keys: Sequence[str], calls: int) -> list[float]:
    """Per-call seconds of ``ServingLookup.get`` in this process (the server does the same call)."""
    keys = [{k: r[k] for k in entity_keys} for r in rows]
    for k in keys[:50]:
        lookup.get(k)
    clock, out = time.perf_counter, []
    for i in range(calls):
        t0 = clock()
        lookup.get(keys[i % len(keys)])
        out.append(clock() - t0)
    return out


# --- the servers and what each is asked --------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    processes: dict[str, ServerProcess]
    ports: dict[str, tuple[int, int]]


def start_servers(ws: Workspace, model_dir: Path, version: str, with_mlserver: bool) -> Servers:
    """Every server at once (idle ones cost no CPU), each stopped when this process exits."""
    from benchmarks import serving_targets as st

    logs = ws.work / "logs"
    from benchmarks.serving_log import config_without_log

    names = ("ours", "ours-w2", "ours-nolog", "mlserver", "feast", "echo", "floor")
    ports = {name: (free_port(), free_port()) for name in names}
    procs = {
        "ours": st.ours(ws.config_path, *ports["ours"], logs / "kfloop-serve.log"),
        "ours-w2": st.ours(st.config_with_workers(ws.config_path, 2), *ports["ours-w2"], logs / "kfloop-w2.log"),
        "echo": st.echo(*ports["echo"], logs / "echo.log"),
        "floor": st.floor(ports["floor"][0], logs / "uvicorn.log"),
    }
    if not quick():  # the inference-log comparison's second server
        procs["ours-nolog"] = st.ours(config_without_log(ws.config_path), *ports["ours-nolog"], logs / "nolog.log")
    if with_mlserver:
        exe = ensure_mlserver_venv()
        name = ws.config.training.model_name
        mls_ports = (*ports["mlserver"], free_port())
        mls_dir, mls_log = ws.work / "mlserver", logs / "mlserver.log"
        procs["mlserver"] = st.mlserver(exe, name, version, model_dir, mls_dir, mls_ports, mls_log)
        repo = st.feast_repo(ws.config, ws.work / "ws", ws.work / "feast-repo")
        procs["feast"] = st.feast_server(repo, ports["feast"][0], logs / "feast.log")
    for proc in procs.values():
        atexit.register(proc.stop)
    for proc in procs.values():
        proc.start()
    return Servers(procs, ports)


def feast_pair(ws: Workspace, servers: Servers, req: Requests) -> PairTarget:
    """The pair's requests: each row's Feast lookup, which of its answer's features the model takes (read
    from one real answer's ``metadata.feature_names``), and the row's own request fields."""
    from kfloop.training.preprocess import feature_columns

    cfg = ws.config
    full_names = cfg.features.naming == "full"
    keys = cfg.source.entity_keys
    lookups = [feast_lookup_body(cfg.features.service, {k: r[k] for k in keys}, full_names) for r in req.full]
    feast_port, mls_port = servers.ports["feast"][0], servers.ports["mlserver"][0]
    http = urllib.request.Request(f"http://127.0.0.1:{feast_port}{FEAST_LOOKUP}", data=lookups[0], method="POST")
    http.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(http, timeout=30) as resp:
        names = json.loads(resp.read())["metadata"]["feature_names"]
    numeric, categorical = feature_columns(cfg)
    own = set(cfg.features.request_features)
    stored = [c for c in [*numeric, *categorical] if c not in own]
    missing = [c for c in stored if c not in names]
    if missing:
        raise RuntimeError(f"Feast's answer has no feature(s) {missing}: it has {names}")
    looked_up = [(names.index(c), c, "BYTES" if c in categorical else "FP64") for c in stored]
    own_rows = [{c: row[c] for c in row if c in own} for row in req.model]
    return pair_target(feast_port, mls_port, cfg.training.model_name, lookups, looked_up, own_rows)


def contenders(ws: Workspace, servers: Servers, req: Requests) -> list[Contender]:
    name = ws.config.training.model_name
    from kfloop.serving.server import PREDICTOR_SUFFIX

    predictor = name + PREDICTOR_SUFFIX
    (oh, og), (wh, wg), (mh, mg), (eh, eg), (fh, _) = (
        servers.ports[k] for k in ("ours", "ours-w2", "mlserver", "echo", "floor")
    )
    out = [
        Contender(FULL, V1, "ours", "ours", v1_target(oh, name, req.full), name),
        Contender(FULL, V2, "ours", "ours", v2_target(oh, name, req.full), name),
        Contender(FULL, GRPC, "ours", "ours", grpc_target(og, name, req.full), name),
        Contender(MODEL, V2, "ours", "ours", v2_target(oh, predictor, req.model), predictor),
        Contender(MODEL, GRPC, "ours", "ours", grpc_target(og, predictor, req.model), predictor),
        Contender(FULL_W2, V1, "ours", "ours-w2", v1_target(wh, name, req.full), name),
        Contender(FULL_W2, V2, "ours", "ours-w2", v2_target(wh, name, req.full), name),
        Contender(FULL_W2, GRPC, "ours", "ours-w2", grpc_target(wg, name, req.full, WORKER_CHANNELS), name),
        Contender(MODEL_W2, V2, "ours", "ours-w2", v2_target(wh, predictor, req.model), predictor),
        Contender(MODEL_W2, GRPC, "ours", "ours-w2", grpc_target(wg, predictor, req.model, WORKER_CHANNELS), predictor),
    ]
    if "mlserver" in servers.processes:
        out += [
            Contender(PEER, V2, "peer", "mlserver", v2_target(mh, name, req.model), name),
            Contender(PEER, GRPC, "peer", "mlserver", grpc_target(mg, name, req.model), name),
            Contender(PAIR, V2, "peer", "feast+mlserver", feast_pair(ws, servers, req), name),
        ]
    out += [
        Contender(ECHO, V1, "floor", "echo", v1_target(eh, "echo", req.full), "echo"),
        Contender(ECHO, V2, "floor", "echo", v2_target(eh, "echo", req.full), "echo"),
        Contender(ECHO, GRPC, "floor", "echo", grpc_target(eg, "echo", req.full), "echo"),
        Contender(HELLO, "REST", "floor", "floor", rest_target(fh, "/", [v1_body(r) for r in req.full]), "-"),
    ]
    return out


def _cpu_seconds(servers: Servers, server: str) -> Callable[[], float | None]:
    """The CPU seconds so far of a target's server processes (the pair: Feast's and MLServer's together)."""
    procs = [servers.processes[name] for name in server.split("+")]

    def total() -> float | None:
        seconds = [p.cpu_seconds() for p in procs]
        return None if any(s is None for s in seconds) else sum(s for s in seconds if s is not None)

    return total


# --- checking the answers (untimed, once) ------------------------------------------------------------


def ask(target: Target, i: int) -> tuple[dict[str, list[Any]], str]:
    """({output: values}, model version) of request ``i`` of ``target``, sent with ordinary clients."""
    if isinstance(target, PairTarget):  # the client's two calls, as the load generator makes them
        head, body = target.lookup.requests[i % len(target.lookup.requests)].split(b"\r\n\r\n", 1)
        url = f"http://{target.lookup.host}:{target.lookup.port}{head.split(b' ')[1].decode()}"
        lookup = urllib.request.Request(url, data=body, method="POST")
        lookup.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(lookup, timeout=10) as resp:
            answer = resp.read()
        model = urllib.request.Request(
            f"http://{target.host}:{target.port}{target.path}", data=pair_body(target, i, answer), method="POST"
        )
        model.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(model, timeout=10) as resp:
            reply = json.loads(resp.read())
        return v2_outputs(reply), str(reply.get("model_version") or "")
    request = target.requests[i % len(target.requests)]
    if isinstance(target, GrpcTarget):
        import grpc

        with grpc.insecure_channel(target.address) as channel:
            data = channel.unary_unary(target.method)(request, timeout=10)
        return grpc_outputs(data)
    head, body = request.split(b"\r\n\r\n", 1)
    path = head.split(b" ")[1].decode()
    http = urllib.request.Request(f"http://{target.host}:{target.port}{path}", data=body, method="POST")
    http.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(http, timeout=10) as resp:
        answer = json.loads(resp.read())
    if "outputs" in answer:
        return v2_outputs(answer), str(answer.get("model_version") or "")
    predictions = answer["predictions"]
    columns = {k: [p[k] for p in predictions] for k in predictions[0]}
    return columns, str(answer.get("model_version") or "")


def check_answers(items: Sequence[Contender], req: Requests, version: str, n: int = 20) -> None:
    """Every contender answers; ours (both paths) and MLServer agree on each row's score; echo echoes."""
    for i in range(n):
        scores: dict[str, float] = {}
        for c in items:
            outputs, got_version = ask(c.target, i)
            if c.group in (FULL, MODEL, PEER, PAIR, FULL_W2, MODEL_W2):
                scores[c.label] = float(outputs["score"][0])
                if c.group not in (MODEL, MODEL_W2) and got_version != version:
                    raise AssertionError(f"{c.label}: model version {got_version!r}, expected {version!r}")
                if c.group in (FULL, FULL_W2) and outputs["defaulted"][0]:
                    raise AssertionError(f"{c.label}: row {req.full[i]} was scored on default features")
            elif c.group == ECHO:
                sent = req.full[i]
                echoed = {k: v[0] for k, v in outputs.items()}
                if set(echoed) != set(sent):
                    raise AssertionError(f"{c.label}: echoed {sorted(echoed)}, sent {sorted(sent)}")
        first = next(iter(scores.values()))
        if any(abs(s - first) > 1e-5 for s in scores.values()):
            raise AssertionError(f"row {i}: the servers disagree on the score: {scores}")


# --- the run -------------------------------------------------------------------------------------------


def _versions(with_mlserver: bool) -> dict[str, str]:
    from importlib.metadata import version

    from benchmarks.serving_targets import MLSERVER_PACKAGES

    out = {name: version(name) for name in ("kserve", "feast", "torch", "uvicorn", "grpcio")}
    if with_mlserver:
        out["mlserver"] = MLSERVER_PACKAGES[0].split("==")[1]
    return out


def _say(line: str) -> None:
    print(line, flush=True)


def _runner(
    gen: LoadGenerator, target: Target, rate: float, echo: Callable[[str], None]
) -> Callable[[Any], list[float]]:
    def run(_: Any) -> list[float]:
        result = gen.run(LoadSpec(target, rate, QUICK_CALLS if quick() else CALLS))
        if result.errors:
            echo(f"    warning: {result.errors} errors at {rate:,.0f} rps ({result.first_error})")
        return result.latencies

    return run


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Workspace, servers, checks and the max-rate searches (all untimed), then one case per target."""
    del data_dir  # nothing to cache: the workspace is rebuilt each run (~40 s)
    echo = _say
    os.environ.setdefault(AS_OF_ENV, DEMO_END.isoformat())  # inherited by the servers started below
    if os.environ.get("KFLOOP_BENCH_SERVING") == "log":
        from benchmarks.serving_log import build_log_only

        return build_log_only(rows or DEMO_ROWS, seed, echo)
    with_mlserver = os.environ.get("KFLOOP_BENCH_MLSERVER", "1") != "0"
    work = Path(tempfile.mkdtemp(prefix="kfloop-bench-serving-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    echo(f"  workspace {work}: demo data + kfloop run ({rows or DEMO_ROWS:,} rows)")
    ws = prepare_workspace(rows or DEMO_ROWS, seed, work)
    version, model_dir = champion_dir(ws, work / "champion")

    from kfloop.feature_repo.online import ServingLookup
    from kfloop.feature_repo.store import open_store

    store = open_store(ws.config, LocalStorage(work / "ws"), os.environ)
    lookup = ServingLookup(
        store,
        ws.config.features.service,
        clock=serving_clock(os.environ),
        full_feature_names=ws.config.features.naming == "full",
    )
    req = request_rows(ws, lookup, DISTINCT_REQUESTS, seed)
    lookup_times = time_lookup(lookup, req.full, ws.config.source.entity_keys, LOOKUP_CALLS)

    peers = "MLServer, feast serve, " if with_mlserver else ""
    echo(f"  starting servers: kfloop serve (1 and 2 workers), {peers}KServe echo, uvicorn")
    servers = start_servers(ws, model_dir, version, with_mlserver)
    items = contenders(ws, servers, req)
    check_answers(items, req, version)

    gen = LoadGenerator()
    atexit.register(gen.close)
    measured = []
    for c in items:
        gen.run(LoadSpec(c.target, 100.0, 200))  # warm-up: first-call paths, lazily built objects
        search = find_max_rate(gen, c.target, policy(), _cpu_seconds(servers, c.server))
        steps = " ".join(f"{s.rate:,.0f}{'✓' if s.passed else '✗'}" for s in search.steps)
        echo(f"  {c.label}: max {search.max_rate:,.0f} rps  [{steps}]")
        measured.append(Measured(c, search))

    ours_http = servers.ports["ours"][0]
    buckets = scrape_histogram(f"http://127.0.0.1:{ours_http}/metrics", "kfloop_feature_lookup_seconds")
    lookup_stats: dict[str, float | None] = {
        "p50": percentile(lookup_times, 50),
        "p99": percentile(lookup_times, 99),
        "mean": statistics.fmean(lookup_times),
        "server_p50_bound": quantile_bound(buckets, 0.50),
        "server_p99_bound": quantile_bound(buckets, 0.99),
        "server_count": buckets[-1][1] if buckets else 0.0,
    }
    rss = {name: proc.rss() for name, proc in servers.processes.items()}
    if "feast" in rss:
        rss["feast+mlserver"] = (rss["feast"] or 0) + (rss["mlserver"] or 0) or None
    text, data = summary(measured, lookup_stats, rss)
    echo(text)
    if not quick():
        from benchmarks.serving_log import compare, log_cases

        off_http, model = servers.ports["ours-nolog"][0], ws.config.training.model_name
        data["inference_log"] = compare(gen, log_cases(ours_http, off_http, model, req.full), echo)

    cases = []
    for m in measured:
        if m.search.max_rate <= 0:
            echo(f"  {m.contender.label}: no passing rate, left out of the timed runs")
            continue
        run = _runner(gen, m.contender.target, m.search.max_rate * LOAD_FRACTION, echo)
        cases.append(Case(m.contender.label, m.contender.role, run))
    params = {
        "seed": seed,
        "demo_rows": rows or DEMO_ROWS,
        "model_version": version,
        "distinct_requests": DISTINCT_REQUESTS,
        "calls_per_run": QUICK_CALLS if quick() else CALLS,
        "quick": quick(),
        "load_fraction": LOAD_FRACTION,
        "policy": dataclasses.asdict(policy()),
        "versions": _versions(with_mlserver),
        **data,
    }
    return Benchmark(
        "serving",
        f"1-row requests at {LOAD_FRACTION:.0%} of each target's max rate (p99 ≤ {policy().p99_limit * 1e3:g} ms); "
        "rows/s = that rate, so x peer / of floor are max-rate ratios",
        cases,
        rows=QUICK_CALLS if quick() else CALLS,
        params=params,
    )
