"""The soak runner: N pipeline runs, a fault drawn for each, retries, and every invariant checked after each run.

A run = a new batch of tiny demo data for one lane (pipeline.py), then up to ``1 + retries`` attempts of the
pipeline on it. The fault is set up before the first attempt: S3 faults stay for every attempt (the endpoint is
still flaky when the run is retried); a Redis restart, a SIGKILL and a full disk hit the first attempt only (the
disk is freed before the retry, as an operator would). A run whose retry succeeds counts as a success; one that
fails every attempt must fail with a clear reason (a kfloop error or an OS error naming what failed) and leave no
partial output, which the invariants check after every run either way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kfloop.config import config_to_json
from kfloop.errors import KfloopError
from kfloop.storage import S3Credentials, S3Storage, make_client
from tests.soak.data import Batch, make_batch
from tests.soak.faults import Disk, RedisProcess
from tests.soak.invariants import check_lane
from tests.soak.killed_step import run_killed
from tests.soak.pipeline import (
    LOCAL_STEPS,
    S3_STEPS,
    KfpKill,
    Lane,
    StepFailedError,
    hand_over_training_set,
    run_attempt,
    run_kfp_local,
    soak_config,
)
from tests.soak.proxy import FAULT_KINDS as S3_FAULT_KINDS
from tests.soak.proxy import FaultProxy

FAULTS = ("none", "s3", "redis", "sigkill", "disk")
#: How often each fault is drawn when the plan is drawn at random.
WEIGHTS = {"none": 1, "s3": 2, "redis": 1, "sigkill": 1, "disk": 1}
#: Steps the SIGKILL fault may kill (deploy writes nothing on a local workspace: nothing to kill it at).
KILLABLE = ("ingest", "validate", "features", "materialize", "training_set", "train", "evaluate")
CREDS = S3Credentials("soak-key", "soak-secret")
#: The S3 lane's client gives up on an answer after this long; the proxy's stalls last longer.
S3_READ_TIMEOUT_S, S3_STALL_S = 1.0, 2.5


@dataclass
class RunRecord:
    """One soak run: its fault, its attempts and what the invariants found afterwards."""

    run: int
    lane: str
    fault: str
    detail: str = ""
    fired: bool = False
    attempts: int = 0
    first_ok: bool = False
    ok: bool = False
    errors: list[str] = field(default_factory=list)  # "attempt n: step: Type: message" per failed attempt
    clear: bool = True  # the final failure (if any) names what failed
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the whole run: attempts and checks
    check_seconds: float = 0.0
    via: str = "in-process"  # or "kfp.local"


@dataclass(frozen=True)
class Planned:
    """One run's fault, as a plan entry ``FAULT[:STEP][@LANE][+kfp]`` says it: ``sigkill:ingest@local`` kills the
    ingest step on the local lane, ``sigkill+kfp`` kills a task of a real kfp.local run (``kfloop run``)."""

    fault: str
    step: str | None = None
    lane: str | None = None
    kfp: bool = False

    @classmethod
    def parse(cls, text: str) -> Planned:
        rest, kfp = (text[: -len("+kfp")], True) if text.endswith("+kfp") else (text, False)
        rest, _, lane = rest.partition("@")
        fault, _, step = rest.partition(":")
        if fault not in FAULTS or (lane and lane not in ("local", "s3")) or (step and step not in KILLABLE):
            raise ValueError(f"plan entry {text!r}: expected FAULT[:STEP][@local|@s3][+kfp], FAULT in {FAULTS}")
        if kfp and (fault != "sigkill" or lane == "s3"):
            raise ValueError(f"plan entry {text!r}: +kfp is for sigkill on the local lane")
        return cls(fault, step or None, "local" if kfp else (lane or None), kfp)


def draw_plan(runs: int, seed: int, faults: tuple[str, ...] = FAULTS, kfp_every: int = 0) -> list[str]:
    """A fault per run, drawn by WEIGHTS (seeded); the first run is fault-free (it makes the first training set).
    With ``kfp_every`` N, every N-th SIGKILL run goes through kfp.local (``+kfp``)."""
    rng = random.Random(seed)
    kinds = [f for f in faults if f != "none"]
    plan = ["none"]
    kills = 0
    for _ in range(runs - 1):
        fault = (
            "none"
            if not kinds or ("none" in faults and rng.random() < 0.15)
            else rng.choices(kinds, [WEIGHTS[f] for f in kinds])[0]
        )
        if fault == "sigkill":
            kills += 1
            fault += "+kfp" if kfp_every and kills % kfp_every == 0 else ""
        plan.append(fault)
    return plan


def clear_reason(err: BaseException) -> bool:
    """A failure a user can act on: a kfloop error (they name the file, key or step) or an OS error with its errno."""
    return isinstance(err, KfloopError) or (isinstance(err, OSError) and err.errno is not None)


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _no_space(err: BaseException) -> bool:
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in str(e) for e in _chain(err))


class Soak:
    """The servers, the two lanes and the run loop. Use as a context manager (it starts and stops everything)."""

    def __init__(
        self,
        workdir: Path,
        moto_endpoint: str,
        *,
        seed: int = 1,
        retries: int = 2,
        s3_rate: float = 0.02,
        batch_rows: int = 200,
        tmpfs_mb: int = 512,
        allow_mount: bool = True,
        disk_free_share: float = 1.0,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.workdir = workdir
        self.moto_endpoint = moto_endpoint
        self.seed, self.retries, self.s3_rate, self.batch_rows = seed, retries, s3_rate, batch_rows
        self.tmpfs_mb, self.allow_mount, self.disk_free_share = tmpfs_mb, allow_mount, disk_free_share
        self.log = log
        self.rng = random.Random(seed)
        self.records: list[RunRecord] = []
        self.succeeded: dict[str, set[int]] = {}
        self.ops: dict[tuple[str, str], int] = {}  # (lane, step) → writes seen in its last clean attempt
        self.bytes: dict[str, int] = {}  # lane → bytes written by its last clean attempt
        self._stack = contextlib.ExitStack()

    # --- set-up ---------------------------------------------------------------------------------------------
    def __enter__(self) -> Soak:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proxy = FaultProxy(self.moto_endpoint, seed=self.seed, stall_s=S3_STALL_S).start()
        self._stack.callback(self.proxy.stop)
        self.redis = RedisProcess(self.workdir / "redis")
        self.redis.start()
        self._stack.callback(self.redis.stop)
        self.disk = Disk(self.workdir / "disk", self.tmpfs_mb, allow_mount=self.allow_mount)
        self._stack.callback(self.disk.close)
        env = {
            "AWS_ACCESS_KEY_ID": CREDS.access_key,
            "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
            "FEAST_S3_ENDPOINT_URL": f"http://{self.proxy.address}",  # Feast's registry: through the proxy too
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        self._stack.callback(lambda: [_restore(k, v) for k, v in saved.items()])
        local_cfg = soak_config("local", {"type": "local", "root": str(self.disk.workspace)}, self.redis.address)
        from kfloop.storage import LocalStorage

        local = LocalStorage(self.disk.workspace)
        bucket = f"soak-{self.seed}-{os.getpid()}"
        s3_section = {"type": "s3", "endpoint": self.proxy.address, "bucket": bucket, "prefix": "ws", "secure": False}
        s3_cfg = soak_config("s3", s3_section, self.redis.address)
        direct = S3Storage(make_client(self.moto_endpoint, CREDS, secure=False, region=None), bucket, "ws")
        faulted_client = make_client(
            self.proxy.address, CREDS, secure=False, region=None, connect_timeout_s=1, read_timeout_s=S3_READ_TIMEOUT_S
        )
        faulted = S3Storage(faulted_client, bucket, "ws")
        self.lanes = {
            "local": Lane("local", local_cfg, local, local, {}, LOCAL_STEPS),
            "s3": Lane("s3", s3_cfg, direct, faulted, env, S3_STEPS),
        }
        self.sources = self.workdir / "sources"
        self.sources.mkdir(exist_ok=True)

    # --- one run --------------------------------------------------------------------------------------------
    def _lane_for(self, planned: Planned, run: int) -> Lane:
        if planned.lane:
            return self.lanes[planned.lane]
        if run == 0 or planned.fault == "disk":
            return self.lanes["local"]
        if planned.fault == "s3":
            return self.lanes["s3"]
        return self.lanes[self.rng.choice(["local", "s3"])]

    def run_one(self, run: int, planned: Planned) -> RunRecord:
        t0 = time.monotonic()
        lane = self._lane_for(planned, run)
        record = RunRecord(run, lane.name, planned.fault, via="kfp.local" if planned.kfp else "in-process")
        batch = make_batch(run, len(lane.batches), self.batch_rows, self.sources, self.seed)
        lane.batches.append(batch)
        steps = lane.steps
        if lane.name == "s3" and not hand_over_training_set(self.lanes["local"], lane):
            lane.steps = tuple(s for s in steps if s not in ("train", "evaluate"))  # nothing to train on yet
        try:
            self._attempts(lane, batch, record, planned)
        finally:
            lane.steps = steps
            self.proxy.configure(0.0)
        self.succeeded.setdefault(lane.name, set()).update([run] if record.ok else [])
        t1 = time.monotonic()
        try:
            record.violations = check_lane(lane, self.succeeded[lane.name], record.ok, self.redis.client())
        except Exception as err:  # a check that cannot even read the workspace is a violation too
            record.violations = [f"{lane.name}: invariant check failed: {type(err).__name__}: {err}"]
        record.check_seconds = round(time.monotonic() - t1, 2)
        record.seconds = round(time.monotonic() - t0, 2)
        self.records.append(record)
        return record

    def _attempts(self, lane: Lane, batch: Batch, record: RunRecord, planned: Planned) -> None:
        first = self._set_up_fault(lane, batch, record, planned)
        injected_before = sum(self.proxy.snapshot().values())
        for attempt in range(1, self.retries + 2):
            record.attempts = attempt
            lane.counting.ops.clear()
            lane.counting.bytes = 0
            kwargs = first if attempt == 1 else {}
            try:
                if planned.kfp:
                    run_kfp_local(lane, batch, self.workdir / "kfp", kwargs.get("kfp"))
                else:
                    run_attempt(lane, batch, f"soak-{record.run}-{attempt}", **kwargs)
            except StepFailedError as failed:
                record.errors.append(f"attempt {attempt}: {failed}".splitlines()[0][:400])
                if record.fault == "disk" and attempt == 1 and _no_space(failed.error):
                    record.fired = True
                record.clear = clear_reason(failed.error)
                continue
            finally:
                self._tear_down_first(record, attempt, kwargs)
            record.ok = True
            record.first_ok = attempt == 1
            if not kwargs and not planned.kfp:  # a clean attempt: what the next faults draw their points from
                for step in lane.steps:
                    self.ops[(lane.name, step)] = lane.counting.ops[step]
                self.bytes[lane.name] = lane.counting.bytes
            break
        if record.fault == "s3":
            n = sum(self.proxy.snapshot().values()) - injected_before
            record.fired = n > 0
            record.detail = f"{n} S3 faults injected (rate {self.s3_rate:g} per request)"
        if record.ok:
            record.clear = True

    def _set_up_fault(self, lane: Lane, batch: Batch, record: RunRecord, planned: Planned) -> dict:
        """The first attempt's keyword arguments for run_attempt that inject ``record.fault``."""
        fault = record.fault
        if fault == "s3":
            self.proxy.configure(self.s3_rate, S3_FAULT_KINDS)
            return {}
        if fault == "redis":
            crash = self.rng.random() < 0.5
            during = self.rng.random() < 0.5
            how = "crash (SIGKILL)" if crash else "clean shutdown"
            record.detail = f"redis-server restarted {'during' if during else 'right before'} materialize, {how}"
            record.fired = True
            return {"before": {"materialize": self._redis_restart(crash, during)}}
        if fault == "sigkill":
            steps = [s for s in KILLABLE if s in lane.steps]
            writing = [s for s in steps if self.ops.get((lane.name, s)) != 0]  # a reused model writes nothing
            step = planned.step or self.rng.choice(writing or steps)
            if planned.kfp:  # kfp.local tasks spend ~3 s importing before they write: kill anywhere in 0-6 s
                return {"kfp": KfpKill(step, self.rng.uniform(0.0, 6.0))}
            at = self.rng.randint(1, max(1, self.ops.get((lane.name, step), 4)))
            return {"instead": {step: self._killer(lane, batch, record, step, at)}}
        if fault == "disk":
            volume = self.bytes.get(lane.name, 1 << 20)
            leave = self.rng.randint(0, max(4096, int(volume * self.disk_free_share)))
            self.disk.fill(leave)
            record.detail = f"workspace disk full: {leave:,} bytes left free ({self.disk.kind.split(':')[0]})"
            return {"wrap": self.disk.wrap}
        return {}

    def _tear_down_first(self, record: RunRecord, attempt: int, kwargs: dict) -> None:
        if attempt != 1:
            return
        kill = kwargs.get("kfp")
        if kill is not None:
            record.detail, record.fired = kill.note, kill.killed
        if record.fault == "disk":
            self.disk.clear()
        thread = getattr(self, "_restart_thread", None)
        if thread is not None:
            thread.join()
            self._restart_thread = None

    def _redis_restart(self, crash: bool, during: bool) -> Callable[[], None]:
        def restart() -> None:
            if not during:
                self.redis.restart(crash=crash)
                return
            delay = self.rng.uniform(0.0, 0.2)
            self._restart_thread = threading.Timer(delay, lambda: self.redis.restart(crash=crash))
            self._restart_thread.start()

        return restart

    def _killer(self, lane: Lane, batch: Batch, record: RunRecord, step: str, at: int) -> Callable[[dict], None]:
        def kill(outputs: dict) -> None:
            args = {"source_uri": str(batch.path), "pipeline_run": f"soak-{record.run}-1"}
            args["version"] = outputs.get("version", "")
            outcome = run_killed(step, config_to_json(lane.config), at, args, lane.environ)
            record.detail = outcome.describe(step)
            record.fired = outcome.killed
            if outcome.killed:
                raise KfloopError(f"step {step} was killed with SIGKILL (by the soak) before write {outcome.at}")
            outputs.update(outcome.result or {})

        return kill

    def run(self, plan: list[str]) -> list[RunRecord]:
        parsed = [Planned.parse(p) for p in plan]
        for run, planned in enumerate(parsed):
            record = self.run_one(run, planned)
            self.log(_line(record))
        return self.records


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _line(r: RunRecord) -> str:
    state = "ok" if r.first_ok else ("ok after retry" if r.ok else "FAILED")
    extra = f" — {r.detail}" if r.detail else ""
    viol = f"; {len(r.violations)} INVARIANT VIOLATIONS: {r.violations[:2]}" if r.violations else ""
    err = f"; {r.errors[-1]}" if r.errors and not r.ok else ""
    via = " (kfp.local)" if r.via == "kfp.local" else ""
    return f"run {r.run:4d} {r.lane:5s} {r.fault:7s} {state:14s} {r.seconds:6.1f}s{via}{extra}{err}{viol}"


def summary(records: list[RunRecord], disk_kind: str, seconds: float, target: float = 99.5) -> tuple[str, bool]:
    """The report table, and whether the soak passed (no violation, every failure clear, rate ≥ target)."""
    lines = [f"fault soak: {len(records)} runs in {seconds:.0f} s; full disk: {disk_kind}", ""]
    head = f"{'fault':9s} {'runs':>5s} {'fired':>6s} {'ok 1st try':>11s} {'ok w/ retry':>12s} {'failed':>7s}"
    head += f" {'violations':>11s}"
    lines += [head, "-" * len(head)]
    by = Counter(r.fault for r in records)
    for fault in [*FAULTS, "total"]:
        rs = records if fault == "total" else [r for r in records if r.fault == fault]
        if not rs:
            continue
        fired = "-" if fault in ("none", "total") else str(sum(r.fired for r in rs))
        lines.append(
            f"{fault:9s} {len(rs):5d} {fired:>6s} {sum(r.first_ok for r in rs):11d} {sum(r.ok for r in rs):12d} "
            f"{sum(not r.ok for r in rs):7d} {sum(len(r.violations) for r in rs):11d}"
        )
    n = len(records) or 1
    first = 100 * sum(r.first_ok for r in records) / n
    final = 100 * sum(r.ok for r in records) / n
    failed = [r for r in records if not r.ok]
    violations = [v for r in records for v in r.violations]
    unclear = [r for r in failed if not r.clear]
    lines += ["", f"success rate: first attempt {first:.1f} %, with retries {final:.1f} % (target {target} %)"]
    lines.append(f"runs per lane: {dict(Counter(r.lane for r in records))}; faults drawn: {dict(by)}")
    first_seen: dict[str, RunRecord] = {}  # a defect left behind is seen again after every later run
    for r in records:
        for v in r.violations:
            first_seen.setdefault(v, r)
    lines.append(f"invariant violations: {len(first_seen)} distinct, in {len(violations)} checks after runs")
    lines += [f"  first after run {r.run} ({r.lane}, {r.fault}: {r.detail}): {v}" for v, r in first_seen.items()]
    lines.append(f"failed runs (every attempt): {len(failed)}, without a clear reason: {len(unclear)}")
    lines += [
        f"  run {r.run} ({r.lane}, {r.fault}{', UNCLEAR' if not r.clear else ''}): {r.errors[-1]}" for r in failed
    ]
    reasons = Counter(e.split(": ", 1)[1].split(" (")[0][:140] for r in records for e in r.errors)
    if reasons:
        lines.append("failed attempts by reason (step: error):")
        lines += [f"  {count:4d} x {reason}" for reason, count in reasons.most_common(12)]
    passed = not violations and not unclear and final >= target
    lines.append(f"verdict: {'PASS' if passed else 'FAIL'}")
    return "\n".join(lines), passed
