"""Issue 17 point 1's ratio as scripts/bench judges it: the no-op and Pay
servers measured back to back in rounds, the order turned each round, and
the median of the rounds' ratios (a shared machine's speed drifts between
measurements minutes apart)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_load  # noqa: E402
import bench_pay_cpu  # noqa: E402


def test_rounds_measure_the_two_servers_in_turn() -> None:
    assert [bench_load.in_turn(n, "noop", "pay") for n in range(3)] == [
        ("noop", "pay"), ("pay", "noop"), ("noop", "pay")]


def test_the_ratio_judged_is_the_median_of_each_rounds_own() -> None:
    # Round 2 on a machine half as fast: its ratio counts, not its figures.
    row = bench_pay_cpu.paired_row(32, [(300, 900), (280, 700), (600, 1500)])
    assert row == {"concurrency": 32, "noop_cpu_us_per_call": [300, 280, 600],
                   "pay_cpu_us_per_call": [900, 700, 1500], "ratios": [3.0, 2.5, 2.5],
                   "ratio": 2.5}


def test_the_verdict_reads_the_rounds_and_the_single_run_without_them() -> None:
    single = [{"concurrency": 32, "ratio": 3.1}, {"concurrency": 128, "ratio": 2.4}]
    paired = [bench_pay_cpu.paired_row(32, [(300, 750)]),
              bench_pay_cpu.paired_row(128, [(300, 720)])]
    result = {"cpu": single, "paired": paired, "latency": None}
    verdict = bench_pay_cpu.evaluate(result)
    assert verdict["figures"]["pay_cpu_ratio"] == {32: 2.5, 128: 2.4}
    assert verdict["met"]["pay_cpu_ratio"] is True  # exactly at the target: met
    paired[0] = bench_pay_cpu.paired_row(32, [(300, 753)])  # 2.51x
    assert bench_pay_cpu.evaluate(result)["met"]["pay_cpu_ratio"] is False
    result["paired"] = []
    assert bench_pay_cpu.evaluate(result)["figures"]["pay_cpu_ratio"] == {32: 3.1, 128: 2.4}


def _open_loop_run(p50_ms: float | None, p99_ms: float | None) -> dict:
    return {"p50_ms": p50_ms, "p99_ms": p99_ms, "achieved_qps": 700.0}


def test_the_latency_judged_is_the_run_with_the_median_p99() -> None:
    runs = [_open_loop_run(5.0, 42.0), _open_loop_run(4.0, 12.0), _open_loop_run(4.5, 15.0)]
    assert bench_pay_cpu.median_p99_run(runs) is runs[2]  # the run itself, its p50 with it
    assert bench_pay_cpu.median_p99_run(runs[:1]) is runs[0]
    # Of an even number, the higher of the middle two; a run with no answer at all sorts last.
    assert bench_pay_cpu.median_p99_run(runs[:2]) is runs[0]
    no_answer = _open_loop_run(None, None)
    assert bench_pay_cpu.median_p99_run([no_answer, runs[1]]) is no_answer
