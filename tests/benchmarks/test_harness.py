"""The benchmark harness: ratios, percentiles, interleaving, the CLI, and a smoke run of ingest.

No ``__init__.py`` here on purpose: as a package, pytest (rootdir-relative "prepend" import mode)
would import this folder as ``benchmarks`` and shadow the top-level ``benchmarks`` package under test.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a plain folder at the repo root, not installed

from benchmarks.__main__ import main  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    Benchmark,
    Case,
    CaseResult,
    compute_ratios,
    percentile,
    run_benchmark,
)
from benchmarks.report import format_table, to_json, write_json  # noqa: E402


def _result(name: str, role: str, times: list[float], rows: int | None = 1000) -> CaseResult:
    return CaseResult(name, role, rows, times=times)  # type: ignore[arg-type]


def test_ratios_are_throughput_ratios_against_the_fastest_of_each_role() -> None:
    ours = _result("ours", "ours", [1.0, 1.2, 0.9])  # median 1.0 → 1000 rows/s
    slow_peer = _result("slow", "peer", [8.0])
    peer = _result("peer", "peer", [3.0, 2.0, 4.0])  # median 3.0
    floor = _result("floor", "floor", [0.5, 0.4, 0.6])  # median 0.5
    compute_ratios([ours, slow_peer, peer, floor])
    assert ours.speed == pytest.approx(1000)
    assert ours.vs_peer == pytest.approx(3.0)
    assert ours.of_floor == pytest.approx(0.5)
    assert peer.vs_peer == pytest.approx(1.0)
    assert floor.of_floor == pytest.approx(1.0)


def test_ratios_without_row_count_or_missing_roles() -> None:
    ours, peer = _result("ours", "ours", [2.0], rows=None), _result("peer", "peer", [6.0], rows=None)
    compute_ratios([ours, peer])
    assert ours.vs_peer == pytest.approx(3.0)
    assert ours.of_floor is None


def test_percentiles_on_known_latencies() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    random.Random(0).shuffle(values)
    assert percentile(values, 50) == pytest.approx(0.050)
    assert percentile(values, 99) == pytest.approx(0.099)
    assert percentile(values, 100) == pytest.approx(0.100)
    assert percentile([0.007], 99) == pytest.approx(0.007)
    with pytest.raises(ValueError):
        percentile([], 50)


def _fake_benchmark(log: list[str]) -> Benchmark:
    def case(name: str, role: str, delay: float, latencies: list[float] | None = None) -> Case[str]:
        def setup() -> str:
            log.append(f"setup {name}")
            return name

        def run(state: str) -> list[float] | None:
            assert state == name
            log.append(f"run {name}")
            time.sleep(delay)
            return latencies

        return Case(name, role, run, setup, lambda state: log.append(f"teardown {state}"))  # type: ignore[arg-type]

    calls = [i / 1000 for i in range(1, 101)]
    # 10x apart each way, so sleep jitter on a loaded machine cannot reorder them
    cases = [case("a", "ours", 0.01, calls), case("b", "peer", 0.1), case("c", "floor", 0.001)]
    return Benchmark("fake", "tiny fake cases", cases, rows=100, aims={"peer": 1.5, "floor": 0.99})


def test_run_interleaves_repeats_and_reports(tmp_path: Path) -> None:
    log: list[str] = []
    report = run_benchmark(_fake_benchmark(log), repeat=3)
    runs = [line.split()[1] for line in log if line.startswith("run")]
    assert runs == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated, never grouped by case
    assert log.count("setup a") == log.count("teardown a") == 3
    a, b, c = report.results
    assert [len(r.times) for r in report.results] == [3, 3, 3]
    assert a.vs_peer is not None and a.vs_peer > 1.5
    assert c.of_floor == pytest.approx(1.0)
    assert len(a.latencies) == 300 and a.percentile(50) == pytest.approx(0.050)
    assert a.percentile(99) == pytest.approx(0.099) and b.percentile(99) is None

    table = format_table(report)
    assert "p50 ms" in table and "p99 ms" in table and "50.00" in table and "99.00" in table
    assert "aim ours ≥ 1.5x peer" in table and " met" in table
    assert "MISSED" in table  # ours is slower than the floor, so 99 % of it is out of reach

    data = json.loads(write_json(report, tmp_path).read_text())
    assert data == json.loads(json.dumps(to_json(report)))
    assert [c["role"] for c in data["cases"]] == ["ours", "peer", "floor"]
    assert data["cases"][0]["p99_s"] == pytest.approx(0.099)
    assert [a["met"] for a in data["aims"]] == [True, False]


def test_unknown_name_exits_2_and_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-bench"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-bench" in err and "known: ingest" in err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.startswith("ingest")


def test_ingest_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "ingest", "--rows", "20000", "--repeat", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for role in ("ours", "peer", "floor"):
        assert f" {role} " in proc.stdout
    data = json.loads((tmp_path / "ingest.json").read_text())
    assert data["rows"] == 20000 and all(c["rows_per_s"] > 0 for c in data["cases"])
