"""The shipped client example works against a real server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clients" / "python" / "pay_example.py"


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


async def test_example_pays_and_reports_field_violations(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    code, out, _ = await _run("--target", target, "--idempotency-key", "example-1")
    assert code == 0
    payment = json.loads(out)
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert paygrid.rows("SELECT idempotency_key FROM payments") == [("example-1",)]

    code, _, err = await _run("--target", target, "--currency", "EURO")
    assert code == 2
    assert "INVALID_ARGUMENT" in err and "legs[0].amount.currency" in err
