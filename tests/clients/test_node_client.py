"""The Node.js client (clients/node) against a real paygrid server: Pay,
idempotent replay, rich errors, a streamed batch with its trailing metadata.

Needs `node` and `npm` on PATH (skipped otherwise); installs the client's
locked npm dependencies itself when they are missing or stale."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "node"
CLI = CLIENT_DIR / "paygrid.js"
# Written after a successful `npm ci`: the digest of the lock file installed.
INSTALLED_LOCK_STAMP = CLIENT_DIR / "node_modules" / ".paygrid-lock-sha256"
NPM_CI_TIMEOUT_S = 180
CLI_TIMEOUT_S = 60
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                       reason="the Node.js client test needs `node` and `npm` on PATH"),
    # The first test also waits for `npm ci` (a few seconds with a warm npm cache).
    pytest.mark.timeout(NPM_CI_TIMEOUT_S + 60),
]


def _lock_digest() -> str:
    return hashlib.sha256((CLIENT_DIR / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def node_client() -> Path:
    """clients/node/paygrid.js with its dependencies installed exactly as locked."""
    # Another pytest run in this checkout may be installing at the same moment.
    lock_path = Path(tempfile.gettempdir()) / (
        "paygrid-npm-" + hashlib.sha256(str(CLIENT_DIR).encode()).hexdigest()[:16] + ".lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = _lock_digest()
        installed = INSTALLED_LOCK_STAMP.read_text() if INSTALLED_LOCK_STAMP.exists() else ""
        if installed != wanted:
            try:
                done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR,
                                      capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`npm ci` in {CLIENT_DIR} took over {NPM_CI_TIMEOUT_S} s")
            if done.returncode != 0:
                pytest.fail(f"`npm ci` in {CLIENT_DIR} failed:\n{done.stdout}\n{done.stderr}")
            INSTALLED_LOCK_STAMP.write_text(wanted)
    return CLI


async def _node(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Runs a node command (the event loop keeps serving paygrid meanwhile)."""
    clean_env = {k: v for k, v in os.environ.items()
                 if k not in ("PAYGRID_API_KEY", "PAYGRID_TARGET")}
    process = await asyncio.create_subprocess_exec(
        "node", *args, cwd=CLIENT_DIR, env={**clean_env, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    return process.returncode, out.decode(), err.decode()


async def _cli(cli: Path, port: int, *args: str, **kwargs) -> tuple[int, str, str]:
    return await _node(str(cli), "--target", f"127.0.0.1:{port}", *args, **kwargs)


async def test_pays_replays_and_reports_field_violations(paygrid, node_client) -> None:
    pay = ("pay", "--payer", "acct_000012345678", "hotel_4711:EUR:45000",
           "flight_0815:EUR:31999:card")
    code, out, err = await _cli(node_client, paygrid.app.port, *pay,
                                "--idempotency-key", "node-trip-1")
    assert code == 0, err
    payment = json.loads(out)
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert [leg["amount"]["amount_minor"] for leg in payment["legs"]] == ["45000", "31999"]
    assert payment["legs"][1]["channel"] == "card"
    assert paygrid.rows("SELECT idempotency_key, status FROM payments") == [
        ("node-trip-1", "SUCCEEDED")]
    assert len(paygrid.captured_everywhere()) == 2

    # Same key, same body: the stored answer, no second charge.
    code, out, err = await _cli(node_client, paygrid.app.port, *pay,
                                "--idempotency-key", "node-trip-1")
    assert code == 0, err
    assert json.loads(out)["payment_id"] == payment["payment_id"]
    assert len(paygrid.captured_everywhere()) == 2

    # Without a key the client makes one (a UUID) for the payment.
    code, out, err = await _cli(node_client, paygrid.app.port, "pay", "--payer", "acct_1",
                                "merchant_0001:USD:1250")
    assert code == 0, err
    assert UUID.fullmatch(json.loads(out)["idempotency_key"])

    code, out, err = await _cli(node_client, paygrid.app.port, "pay", "--payer", "acct_1",
                                "--idempotency-key", "node-bad-1", "merchant_0001:EURO:100")
    assert code == 1 and out == ""
    error = json.loads(err)["error"]
    assert (error["code"], error["code_number"]) == ("INVALID_ARGUMENT", 3)
    bad_request = next(d for d in error["details"] if d["type"] == "google.rpc.BadRequest")
    assert [v["field"] for v in bad_request["field_violations"]] == ["legs[0].amount.currency"]
    assert paygrid.rows("SELECT 1 FROM payments WHERE idempotency_key = 'node-bad-1'") == []
    assert len(paygrid.captured_everywhere()) == 3


async def test_submits_a_batch_and_reads_summary_and_trailers(paygrid, node_client) -> None:
    code, out, err = await _cli(
        node_client, paygrid.app.port, "submit-batch", "--batch-id", "node-batch-1",
        "--payer", "acct_payroll", "--generate", "250", "--chunk-size", "100",
        "--group-size", "50")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    groups = [line["group"] for line in lines if "group" in line]
    summary, trailers = lines[-2]["summary"], lines[-1]["trailers"]
    assert len(groups) >= 5  # 250 items, at most 50 per group
    references = [item["reference"] for group in groups for item in group["items"]]
    assert len(references) == len(set(references)) == 250
    assert summary["status"] == "BATCH_STATUS_COMPLETED"
    assert summary["counts"] == {"total": "250", "succeeded": "250", "failed": "0",
                                 "rejected": "0", "pending": "0"}
    assert float(trailers["x-paygrid-apt-ms"]) > 0
    assert float(trailers["x-paygrid-throughput"]) > 0
    assert paygrid.rows("SELECT status, COUNT(*) FROM batch_items GROUP BY status") == [
        ("SUCCEEDED", 250)]
    assert len(paygrid.captured_everywhere()) == 250


async def test_batch_files_reject_bad_rows_and_broken_files_pay_nothing(
        paygrid, node_client, tmp_path: Path) -> None:
    source = tmp_path / "payouts.csv"
    source.write_text(
        "reference,payee,currency,amount_minor,channel,requested_at\n"
        'r1,"supplier, ""quoted""",EUR,1000000000000000,,2026-11-25T09:00:00+00:00\n'
        "r2,supplier_2,EURO,100,,\n"
        "r3,supplier_3,EUR,12.50,,\n"  # not whole minor units: rejected, never rounded
        "r4,supplier_4,JPY,500,card,\n")
    code, out, err = await _cli(node_client, paygrid.app.port, "submit-batch",
                                "--batch-id", "node-csv-1", "--payer", "acct_payroll",
                                "--file", str(source))
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    rejected = {item["reference"] for line in lines if "rejected" in line
                for item in line["rejected"]["items"]}
    assert rejected == {"r2", "r3"}
    assert lines[-2]["summary"]["counts"]["succeeded"] == "2"
    assert sorted(paygrid.rows("SELECT payee, amount_minor FROM batch_items "
                               "WHERE status = 'SUCCEEDED'")) == [
        ('supplier, "quoted"', 10**15), ("supplier_4", 500)]

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"reference": "j1", "payee": "p", "currency": "USD", "amount_minor": 1}\n'
                      "not json\n")
    code, _, err = await _cli(node_client, paygrid.app.port, "submit-batch",
                              "--batch-id", "node-broken-1", "--payer", "acct_payroll",
                              "--file", str(broken))
    assert code == 2
    assert "broken.jsonl:2" in json.loads(err)["usage_error"]
    assert paygrid.rows("SELECT batch_id FROM batches") == [("node-csv-1",)]
    assert paygrid.rows("SELECT COUNT(*) FROM batch_items") == [(4,)]


class _RecordingPayments(pb_grpc.PaymentServiceServicer):
    """Fails the first call of each idempotency key with UNAVAILABLE; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def Pay(self, request, context):
        authorization = dict(context.invocation_metadata()).get("authorization")
        first = all(key != request.idempotency_key for key, _ in self.calls)
        self.calls.append((request.idempotency_key, authorization))
        if first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "briefly down")
        return pb.PayResponse(payment=pb.Payment(
            payment_id="pay_fake", idempotency_key=request.idempotency_key,
            status=pb.PAYMENT_STATUS_SUCCEEDED))


async def test_sends_the_api_key_and_retries_with_the_same_idempotency_key(node_client) -> None:
    # The real server may not check keys yet; this one shows what goes on the wire.
    payments = _RecordingPayments()
    server = grpc.aio.server()
    pb_grpc.add_PaymentServiceServicer_to_server(payments, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        pay = ("pay", "--payer", "acct_1", "merchant_0001:USD:100")
        runs = [((), {}, "Bearer paygrid-dev-key"),
                ((), {"PAYGRID_API_KEY": "key-from-env"}, "Bearer key-from-env"),
                (("--api-key", "key-from-flag"), {"PAYGRID_API_KEY": "key-from-env"},
                 "Bearer key-from-flag")]
        for extra, env, expected in runs:
            payments.calls.clear()
            code, out, err = await _cli(node_client, port, *pay, *extra, env=env)
            assert code == 0, err
            key = json.loads(out)["idempotency_key"]
            assert payments.calls == [(key, expected), (key, expected)]
            assert json.loads(err.splitlines()[0])["retry"]["code"] == "UNAVAILABLE"
    finally:
        await server.stop(None)


async def test_int64_amounts_stay_exact(node_client) -> None:
    # Past 2^53 a float would change the amount; the client never makes one.
    amount = 2**53 + 1
    script = (
        "const { paygridPackage } = require('./paygrid_client');"
        "const pay = paygridPackage().definition['paygrid.v1.PaymentService'].Pay;"
        "const wire = pay.requestSerialize({ idempotency_key: 'k', payer: 'p', legs: [{ payee: 'x',"
        f" amount: {{ currency: 'USD', amount_minor: '{amount}' }} }}] }});"
        "const back = pay.requestDeserialize(wire).legs[0].amount.amount_minor;"
        "process.stdout.write(JSON.stringify({ wire: wire.toString('hex'), back }));")
    code, out, err = await _node("-e", script)
    assert code == 0, err
    result = json.loads(out)
    assert result["back"] == str(amount)
    decoded = pb.PayRequest.FromString(bytes.fromhex(result["wire"]))
    assert decoded.legs[0].amount.amount_minor == amount


async def test_a_wrong_api_key_is_unauthenticated(paygrid, node_client) -> None:
    code, out, err = await _cli(node_client, paygrid.app.port, "pay", "--payer", "acct_1",
                                "--api-key", "not-a-key", "merchant_0001:USD:1250")
    assert code == 1 and out == ""
    error = json.loads(err)["error"]
    assert error["code"] == "UNAUTHENTICATED"
    info = next(d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert info["reason"] == "INVALID_API_KEY"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(0,)]
