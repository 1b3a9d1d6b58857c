"""CLI: ``python -m benchmarks [NAME ...] [--repeat N] [--rows N | --sizes 100k,1M,5M] [--roles ours,floor] [--list]``
(no NAME: all)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

from benchmarks import BENCHMARKS, DEFAULT_OUT
from benchmarks.harness import Benchmark, run_benchmark
from benchmarks.report import format_table, write_json
from benchmarks.scaling import format_scaling, parse_sizes, run_sizes


def _sizes(text: str) -> list[int]:
    try:
        return parse_sizes(text)
    except ValueError as err:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(err)) from None


ROLES = ("ours", "peer", "floor")


def _roles(text: str) -> frozenset[str]:
    chosen = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(chosen - set(ROLES))
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"--roles takes a comma-separated subset of {', '.join(ROLES)}")
    return chosen


def only(bench: Benchmark, roles: frozenset[str] | None) -> Benchmark:
    """``bench`` with the cases of ``roles`` only (all when None): a peer too slow or too big at 5M rows can be
    left out of a scaling run, while ours and the floor still run side by side."""
    if roles is None:
        return bench
    return dataclasses.replace(bench, cases=[c for c in bench.cases if c.role in roles])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all; see --list)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per case, interleaved (default: 3)")
    p.add_argument("--rows", type=int, default=None, help="override the benchmark's row count (quick runs)")
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="N,N,...",
        help="run at each row count (k/M allowed, e.g. 100k,1M,5M) and print how time and peak memory grow",
    )
    p.add_argument(
        "--roles",
        type=_roles,
        default=None,
        metavar="ROLE,...",
        help="run only these roles' cases (ours, peer, floor; default: all), e.g. --roles ours,floor with --sizes",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--quiet", action="store_true", help="print only the result tables")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, about) in BENCHMARKS.items():
            print(f"{name:12} {about}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.rows is not None and args.rows < 1:
        parser.error("--rows must be >= 1")
    if args.rows is not None and args.sizes is not None:
        parser.error("--rows and --sizes exclude each other")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name][0])
        if args.sizes is not None:
            if hasattr(module, "run_standalone"):
                print(f"== {name}: a rate held over time; it has no --sizes mode (skipped)", flush=True)
                continue
            print(f"== {name}: scaling over {', '.join(f'{n:,}' for n in args.sizes)} rows", flush=True)
            echo = None if args.quiet else (lambda line: print(line, flush=True))

            def build(rows: int, module: object = module) -> Benchmark:
                return only(module.build(rows=rows, data_dir=args.out / "data"), args.roles)  # type: ignore[attr-defined]

            print(format_scaling(name, run_sizes(build, args.sizes, args.repeat, echo)), flush=True)
            continue
        if hasattr(module, "run_standalone"):  # a rate held over time, not a timed call: its own runs and table
            print(f"== {name}", flush=True)
            module.run_standalone(rows=args.rows, out=args.out, quiet=args.quiet)
            continue
        print(f"== {name}: preparing (untimed)", flush=True)
        bench: Benchmark = only(module.build(rows=args.rows, data_dir=args.out / "data"), args.roles)
        echo = None if args.quiet else (lambda line: print(line, flush=True))
        report = run_benchmark(bench, repeat=args.repeat, echo=echo)
        print(format_table(report))
        print(f"results: {write_json(report, args.out)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
