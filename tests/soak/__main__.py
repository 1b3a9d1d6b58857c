"""``python -m tests.soak``: the fault soak (``make soak``). Starts its own moto_server, redis-server and fault
proxy, runs the pipeline ``--runs`` times under faults drawn with ``--seed``, prints one line per run and the
summary, writes the records as JSON (``--json``) and exits 1 unless the soak passed."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from tests.soak.faults import free_port
from tests.soak.runner import FAULTS, Soak, draw_plan, summary


def _moto() -> tuple[subprocess.Popen, str]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if not exe:
        raise SystemExit("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    from tests.conftest import wait_for_port

    wait_for_port(port, proc)
    return proc, f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="pipeline runs (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault plan, the data and the proxy")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"fault kinds to draw from (default {','.join(FAULTS)})"
    )
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed run (default 2)")
    parser.add_argument("--s3-rate", type=float, default=0.02, help="share of S3 requests faulted in an S3 run")
    parser.add_argument("--rows", type=int, default=200, help="rows per batch (one batch per run)")
    parser.add_argument("--tmpfs-mb", type=int, default=512, help="size of the local lane's tmpfs workspace")
    parser.add_argument("--no-tmpfs", action="store_true", help="simulate the full disk instead of mounting a tmpfs")
    parser.add_argument(
        "--kfp-every",
        type=int,
        default=10,
        help="every N-th SIGKILL run goes through kfp.local, `kfloop run` (0: none)",
    )
    parser.add_argument("--plan", help="explicit comma-separated plan, FAULT[:STEP][@LANE][+kfp] per run")
    parser.add_argument("--json", type=Path, help="write every run's record here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    parser.add_argument("--verbose", action="store_true", help="show library warnings and logs (retries, takeovers)")
    args = parser.parse_args(argv)
    if not args.verbose:  # the retries the faults cause log a warning each: the per-run lines say what happened
        logging.disable(logging.WARNING)
        warnings.simplefilter("ignore")
    faults = tuple(f for f in args.faults.split(",") if f)
    if not faults or set(faults) - set(FAULTS):
        parser.error(f"--faults: choose from {','.join(FAULTS)}")
    plan = args.plan.split(",") if args.plan else draw_plan(args.runs, args.seed, faults, args.kfp_every)
    workdir = Path(tempfile.mkdtemp(prefix="kfloop-soak-"))
    moto, endpoint = _moto()
    t0 = time.monotonic()
    try:
        with Soak(
            workdir,
            endpoint,
            seed=args.seed,
            retries=args.retries,
            s3_rate=args.s3_rate,
            batch_rows=args.rows,
            tmpfs_mb=args.tmpfs_mb,
            allow_mount=not args.no_tmpfs,
            log=lambda line: print(line, flush=True),
        ) as soak:
            records = soak.run(plan)
            disk_kind = soak.disk.kind
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text, passed = summary(records, disk_kind, time.monotonic() - t0)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in records], indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
