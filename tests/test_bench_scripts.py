"""scripts/bench still runs end to end (tiny sizes; no timing is asserted
here: speed targets live in the bench's own report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_bench_quick_run_writes_table_figures_and_plot(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    stems = {path.stem for path in tmp_path.iterdir()}
    assert len(stems) == 1, stems  # one timestamped run
    stem = tmp_path / stems.pop()
    report = stem.with_suffix(".md").read_text()
    assert stem.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    run = json.loads(stem.with_suffix(".json").read_text())
    results = run["results"]

    ceilings = results["ceilings"]
    assert [level["concurrency"] for level in ceilings["unary"]] == [1, 4]
    assert ceilings["unary_at_half_peak"]["calls"] > 0
    assert ceilings["bidi_stream"]["items"] == ceilings["bidi_stream"]["messages"] * 500 > 0
    assert {(row["driver"], row["rows_per_commit"]) for row in ceilings["sqlite"]} == {
        ("aiosqlite", 1), ("sqlite3", 1), ("aiosqlite", 500), ("sqlite3", 500)}
    for pay in (results["pay_direct"], results["pay_grpc"]):
        assert [level["concurrency"] for level in pay["levels"]] == [1, 4]
        for level in pay["levels"]:
            assert level["calls"] > 0 and 0 < level["p50_ms"] <= level["p99_ms"]
        # Every timed payment was stored as SUCCEEDED (the bench checks it too).
        assert pay["payments_stored"] >= sum(level["calls"] for level in pay["levels"])
        assert pay["at_half_peak"]["calls"] > 0
    assert results["legs"]["payments"] == 3 and results["legs"]["wall_ms_p50"] > 0
    assert sorted((b["items"], b["per_message"]) for b in results["batches"]) == [
        (300, 1), (300, 300), (600, 1), (600, 500)]
    for batch in results["batches"]:
        assert batch["server_rss_peak_mib"] >= batch["server_rss_start_mib"] > 0
        assert batch["apt_ms"] > 0 and batch["groups"] > 0

    assert set(run["verdict"]["met"]) == set(run["targets"])
    for target in run["targets"]:
        assert f"| {target} |" in report
    assert "| 600 | 500 |" in report and "no-op bidi echo" in report
