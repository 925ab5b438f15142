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
