"""Stubs in a language other than Python and JavaScript, generated from
protos/ alone, against a real server: Ruby (grpc_tools_ruby_protoc) makes a
Pay, decodes a BadRequest with the shipped error_details.proto, and submits
a batch ended by a BatchEnd.

Needs `ruby` with the grpc gem and `grpc_tools_ruby_protoc` (Debian:
ruby-grpc ruby-grpc-tools; .ci/run installs them best effort); skipped,
saying so, where they are missing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paygrid_server.api_keys import DEV_API_KEY

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
CLIENT = Path(__file__).resolve().parent / "polyglot" / "ruby_client.rb"
RUBY_TIMEOUT_S = 60


def _ruby_toolchain_missing() -> str | None:
    for tool in ("ruby", "grpc_tools_ruby_protoc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH (Debian: apt-get install ruby-grpc ruby-grpc-tools)"
    probe = subprocess.run(["ruby", "-e", "require 'grpc'"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ruby cannot load the grpc gem: {probe.stderr.strip()[:200]}"
    return None


MISSING = _ruby_toolchain_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Ruby client test: {MISSING}")


@pytest.fixture(scope="module")
def ruby_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every proto of protos/, google/rpc included, generated as a Ruby user would."""
    out = tmp_path_factory.mktemp("ruby-stubs")
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    generated = subprocess.run(["grpc_tools_ruby_protoc", f"-I{PROTOS}", f"--ruby_out={out}",
                                f"--grpc_out={out}", *protos],
                               capture_output=True, text=True, timeout=RUBY_TIMEOUT_S)
    assert generated.returncode == 0, generated.stderr
    return out


async def _ruby(stubs: Path, port: int, *args: str) -> dict:
    """Runs the Ruby client (the event loop keeps serving paygrid meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        "ruby", f"-I{stubs}", str(CLIENT), f"127.0.0.1:{port}", *args,
        env={**os.environ, "PAYGRID_API_KEY": DEV_API_KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), RUBY_TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_ruby_stubs_pay_and_decode_a_bad_request(paygrid, ruby_stubs) -> None:
    paid = await _ruby(ruby_stubs, paygrid.app.port, "pay", "ruby-pay-1")
    assert paid["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert paygrid.rows("SELECT payment_id, status FROM payments") == [
        (paid["payment_id"], "SUCCEEDED")]
    assert len(paygrid.captured_everywhere()) == 1

    replayed = await _ruby(ruby_stubs, paygrid.app.port, "pay", "ruby-pay-1")
    assert replayed["payment_id"] == paid["payment_id"]
    assert len(paygrid.captured_everywhere()) == 1

    refused = await _ruby(ruby_stubs, paygrid.app.port, "bad-pay", "ruby-bad-1")
    assert refused == {"code": 3, "fields": ["legs[0].amount.currency"]}  # INVALID_ARGUMENT


async def test_ruby_stubs_submit_a_batch_ended_by_its_end_message(paygrid, ruby_stubs) -> None:
    done = await _ruby(ruby_stubs, paygrid.app.port, "batch", "ruby-batch-1", "25")
    assert done["status"] == "BATCH_STATUS_COMPLETED"
    assert done["succeeded"] == 25 and done["groups"] >= 1
    assert done["model_throughput"] > 0
    assert {"x-paygrid-apt-ms", "x-paygrid-throughput", "x-paygrid-model-throughput",
            "x-paygrid-wall-ms"} <= set(done["trailers"])
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == sorted(
        f"payee_{i}" for i in range(1, 26))
