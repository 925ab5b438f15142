"""The batch CLI (`paygrid batch submit`): a CSV or JSON Lines file in, a results file
out, resumable."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import channel, slow

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "clients" / "python" / "paygrid_cli.py"


async def _cli(target: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CLI), "batch", "submit", *args, "--target", target, "--payer", "acct_payroll",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def _results(path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len({line["reference"] for line in lines}), "one line per item"
    return {line["reference"]: line for line in lines}


async def test_cli_submits_a_csv_and_writes_every_result(paygrid, tmp_path: Path) -> None:
    source = tmp_path / "payroll.csv"
    source.write_text("reference,payee,currency,amount_minor,channel,requested_at\n" + "".join(
        f"p{i},employee_{i},EUR,{1000 + i},,2026-11-25T09:00:00+00:00\n" for i in range(300))
        + "bad,employee_x,EUR,not-a-number,,\n")
    output = tmp_path / "results.jsonl"
    process = await _cli(f"127.0.0.1:{paygrid.app.port}", str(source), "--results-file", str(output))
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "COMPLETED" in out.decode() and "301/301" in err.decode()
    results = _results(output)
    assert len(results) == 301
    assert Counter(r["status"] for r in results.values()) == {"SUCCEEDED": 300, "REJECTED": 1}
    assert results["bad"]["failure_reason"] == "INVALID_ITEM"
    assert len(paygrid.captured_everywhere()) == 300


async def test_cli_resumes_after_being_killed(start_paygrid, tmp_path: Path) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(10)),))
    target = f"127.0.0.1:{paygrid.app.port}"
    source = tmp_path / "payouts.jsonl"
    source.write_text("".join(json.dumps({"reference": f"s{i}", "payee": f"supplier_{i}",
                                          "currency": "USD", "amount_minor": 500 + i}) + "\n"
                              for i in range(1_000)))
    output = tmp_path / "results.jsonl"
    args = (str(source), "--results-file", str(output), "--group-size", "20", "--parallelism", "1")
    card = paygrid.simulator("card")
    # Two groups are paid, the third waits at the channel: the CLI is killed
    # mid-batch, however fast or slow the machine.
    card.faults.hold_charges(after_calls=2)
    first = await _cli(target, *args)
    await asyncio.wait_for(card.faults.held(1), 60)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert len(card.ledger.captured()) == 40
    card.faults.release_charges()

    # The same command resumes (waiting, if need be, for the first submission's
    # last groups: the server answers ABORTED with a RetryInfo until then).
    again = await _cli(target, *args)
    _, err = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0, err.decode()
    assert "resuming batch" in err.decode()
    results = _results(output)
    assert len(results) == 1_000
    assert {r["status"] for r in results.values()} == {"SUCCEEDED"}
    captured = paygrid.ledger("card").captured()
    assert Counter(c.payee for c in captured) == Counter(f"supplier_{i}" for i in range(1_000))
