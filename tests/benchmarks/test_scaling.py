"""`--sizes`: the growth exponents call out a stage that grows faster than linearly and pass a linear one."""

from __future__ import annotations

import time

import pytest

from benchmarks.__main__ import main, only
from benchmarks.harness import Benchmark, Case
from benchmarks.scaling import exponent, format_scaling, parse_sizes, run_sizes


def test_sizes_parse_with_suffixes_sorted_and_distinct() -> None:
    assert parse_sizes("1M, 100k,100000,2.5k") == [2_500, 100_000, 1_000_000]
    with pytest.raises(ValueError, match="'ten' is not a row count"):
        parse_sizes("ten,100")
    with pytest.raises(ValueError, match="at least two"):
        parse_sizes("100k")


def _bench(rows: int) -> Benchmark:
    unit = 5e-5  # 50 ms at 1,000 rows: a loaded machine's sleep overshoot (a few ms) stays small beside it

    def linear(_: None) -> None:
        time.sleep(rows * unit)

    def quadratic(_: None) -> None:
        time.sleep(rows * rows * unit / 2500)

    cases = [Case("linear", "ours", linear), Case("quadratic", "peer", quadratic)]
    return Benchmark("toy", "sleep", cases, rows=rows)


def test_a_quadratic_case_is_called_out_and_a_linear_one_is_not() -> None:
    pts = run_sizes(_bench, [1_000, 4_000], repeat=1)
    table = format_scaling("toy", pts)
    lin = [p for p in pts if p.case == "linear"]
    quad = [p for p in pts if p.case == "quadratic"]
    assert exponent(1_000, lin[0].seconds, 4_000, lin[1].seconds) == pytest.approx(1.0, abs=0.25)
    assert exponent(1_000, quad[0].seconds, 4_000, quad[1].seconds) == pytest.approx(2.0, abs=0.25)
    assert "quadratic at 4,000 rows: time superlinear" in table
    assert "linear at 4,000" not in table


def test_cli_rejects_rows_with_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ingest", "--rows", "10", "--sizes", "10,20"])
    assert "exclude each other" in capsys.readouterr().err


def test_roles_leave_out_the_other_cases_and_unknown_roles_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    pts = run_sizes(lambda rows: only(_bench(rows), frozenset({"ours"})), [100, 200], repeat=1)
    assert {p.case for p in pts} == {"linear"}  # the quadratic peer never ran
    every = _bench(100)
    assert only(every, None) is every
    with pytest.raises(SystemExit):
        main(["ingest", "--roles", "ours,best"])
    assert "--roles takes a comma-separated subset of ours, peer, floor" in capsys.readouterr().err
