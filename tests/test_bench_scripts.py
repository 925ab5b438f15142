"""The benchmark scripts still run (tiny sizes; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pay_legs_bench_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_pay_legs.py"),
         "--legs", "3", "--latency-ms", "5", "--payments", "3"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["payments"] == 3 and figures["legs"] == 3
    assert figures["wall_ms_p50"] > 0


def test_batch_bench_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_batch.py"), "--items", "300",
         "--per-message", "50", "--group-size", "50"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["items"] == 300 and figures["groups"] == 6
    assert figures["server_rss_peak_mib"] >= figures["server_rss_start_mib"] > 0


def test_ceilings_bench_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_ceilings.py"),
         "--duration-s", "0.3", "--concurrency", "1,4", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert [level["concurrency"] for level in figures["unary"]] == [1, 4]
    for level in figures["unary"]:
        assert level["calls"] > 0 and level["qps"] > 0
        assert 0 < level["p50_ms"] <= level["p99_ms"]
    stream = figures["bidi_stream"]
    assert stream["items"] == stream["messages"] * 500 > 0 and stream["items_per_s"] > 0
    assert {(row["driver"], row["rows_per_commit"]) for row in figures["sqlite"]} == {
        ("aiosqlite", 1), ("sqlite3", 1), ("aiosqlite", 500), ("sqlite3", 500)}
    for row in figures["sqlite"]:
        assert row["commits"] > 0 and row["rows_per_s"] > 0
    assert all(size > 0 for size in figures["payload_bytes"].values())
