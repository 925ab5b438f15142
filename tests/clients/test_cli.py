"""The `paygrid` CLI (clients/python/paygrid_cli.py) as its own process
against a real paygrid: every subcommand in human and JSON output, exit
codes, and errors on stderr with their field violations."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from paygrid_server.api_keys import ApiKeyEntry, api_key_sha256
from paygrid_server.config import AuthConfig, TlsConfig
from tests.conftest import TEST_CHANNELS, channel
from tests.support.local_process import free_loopback_port
from tests.support.certificates import TestCa

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "clients" / "python" / "paygrid_cli.py"
PAYER = "acct_000012345678"


async def paygrid_cli(target: str, *args: str, env: dict[str, str] | None = None
                      ) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CLI), "--target", target, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


async def test_pay_get_list_and_refund_in_human_and_json_output(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    code, out, err = await paygrid_cli(
        target, "pay", "--payer", PAYER, "--leg", "hotel_4711:EUR:45000",
        "--leg", "flight_0815:EUR:31999:card", "--idempotency-key", "cli-trip-1",
        "--metadata", "trip=ZRH-LIS")
    assert code == 0, err
    assert "SUCCEEDED" in out and "cli-trip-1" in out and "trip=ZRH-LIS" in out
    assert "hotel_4711" in out and "45000" in out and "flight_0815" in out and "card" in out
    payment_id = out.split()[1]
    assert payment_id.startswith("pay_")

    code, out, err = await paygrid_cli(target, "--output", "json", "pay", "--payer", PAYER,
                                       "--leg", "merchant_0001:USD:1250", "--mode", "independent")
    assert code == 0, err
    (second,) = json_lines(out)
    assert second["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert second["mode"] == "PAYMENT_MODE_INDEPENDENT"
    assert second["legs"][0]["amount"] == {"currency": "USD", "amountMinor": "1250"}

    # Options may also follow the subcommand.
    code, out, _ = await paygrid_cli(target, "get", payment_id, "--output", "json")
    assert code == 0
    assert json_lines(out)[0]["paymentId"] == payment_id
    code, out, _ = await paygrid_cli(target, "get", payment_id)
    assert code == 0 and payment_id in out and "LEG" in out and "ALL_OR_NOTHING" in out

    code, out, err = await paygrid_cli(target, "list", "--page-size", "1")
    assert code == 0
    assert second["paymentId"] in out and payment_id not in out  # newest first, one page
    assert "--page-token" in err
    code, out, _ = await paygrid_cli(target, "--output", "json", "list", "--page-size", "1",
                                     "--all")
    assert code == 0
    assert [p["paymentId"] for p in json_lines(out)] == [second["paymentId"], payment_id]

    code, out, err = await paygrid_cli(target, "refund", payment_id, "--leg", "0:EUR:5000",
                                       "--reason", "room downgrade")
    assert code == 0, err
    assert "SUCCEEDED" in out and "5000" in out and "room downgrade" in out
    code, out, err = await paygrid_cli(target, "--output", "json", "refund", payment_id)
    assert code == 0, err
    (refund,) = json_lines(out)
    assert refund["refund"]["status"] == "REFUND_STATUS_SUCCEEDED"
    assert [leg["refundedAmountMinor"] for leg in refund["payment"]["legs"]] == ["45000", "31999"]
    assert len(paygrid.captured_everywhere()) == 3


async def test_pay_async_prints_the_accepted_payment_and_get_shows_its_outcome(
        start_paygrid) -> None:
    # The charge is held across two CLI processes, each starting Python and
    # grpc: on a loaded machine longer than the card's default 2 s timeout.
    paygrid = await start_paygrid((channel("card", timeout_ms=60_000), *TEST_CHANNELS[1:]))
    target = f"127.0.0.1:{paygrid.app.port}"
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # still processing, provably, when the CLI answers
    code, out, err = await paygrid_cli(target, "--output", "json", "pay", "--async",
                                       "--payer", PAYER, "--leg", "merchant_0001:USD:1250:card")
    assert code == 0, err
    (accepted,) = json_lines(out)
    assert accepted["status"] == "PAYMENT_STATUS_PROCESSING"
    assert accepted["legs"][0]["status"] == "LEG_STATUS_PENDING"
    code, out, _ = await paygrid_cli(target, "pay", "--async", "--payer", PAYER,
                                     "--leg", "merchant_0002:USD:1250:card")
    assert code == 0 and "PROCESSING" in out

    card.faults.release_charges()
    await paygrid.app.in_flight.drain(timeout_s=30)
    code, out, _ = await paygrid_cli(target, "--output", "json", "get", accepted["paymentId"])
    assert code == 0
    assert json_lines(out)[0]["status"] == "PAYMENT_STATUS_SUCCEEDED"


async def test_a_declined_payment_exits_1_and_says_why(paygrid) -> None:
    code, out, _ = await paygrid_cli(
        f"127.0.0.1:{paygrid.app.port}", "pay", "--payer", PAYER,
        "--leg", "hotel_4711:EUR:100", "--leg", "decline_insufficient_funds:EUR:100")
    assert code == 1
    assert "FAILED" in out and "INSUFFICIENT_FUNDS (insufficient_funds)" in out and "VOIDED" in out


async def test_errors_go_to_stderr_with_field_violations_and_exit_2_or_3(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    code, out, err = await paygrid_cli(target, "pay", "--payer", PAYER,
                                       "--leg", "merchant_0001:EURO:100")
    assert (code, out) == (2, "")
    assert "INVALID_ARGUMENT (INVALID_REQUEST)" in err and "legs[0].amount.currency" in err

    code, _, err = await paygrid_cli(target, "pay", "--payer", PAYER,
                                     "--leg", "merchant_0001:EUR:12.50")
    assert code == 2 and "integer of minor units" in err  # refused before any call

    code, _, err = await paygrid_cli(target, "get", "pay_unknown")
    assert code == 2 and "NOT_FOUND" in err

    code, _, err = await paygrid_cli(target, "refund", "pay_unknown", "--leg", "zero")
    assert code == 2 and "leg_index" in err

    nobody = f"127.0.0.1:{free_loopback_port()}"
    code, _, err = await paygrid_cli(nobody, "--max-attempts", "1", "pay", "--payer", PAYER,
                                     "--leg", "merchant_0001:EUR:100", "--idempotency-key", "k9")
    assert code == 3 and "UNAVAILABLE" in err and "--idempotency-key k9" in err
    assert paygrid.captured_everywhere() == []


async def test_the_api_key_comes_from_the_option_or_the_environment(start_paygrid) -> None:
    key = "pgk_acme_cli_test_0123456789"
    paygrid = await start_paygrid(auth=AuthConfig((ApiKeyEntry("acme", api_key_sha256(key)),)))
    target = f"127.0.0.1:{paygrid.app.port}"
    args = ("pay", "--payer", PAYER, "--leg", "merchant_0001:USD:100")
    code, _, err = await paygrid_cli(target, "--api-key", key, *args)
    assert code == 0, err
    code, _, err = await paygrid_cli(target, *args, env={"PAYGRID_API_KEY": key})
    assert code == 0, err
    code, _, err = await paygrid_cli(target, *args, env={"PAYGRID_API_KEY": "pgk_wrong"})
    assert code == 2 and "UNAUTHENTICATED (INVALID_API_KEY)" in err
    assert paygrid.rows("SELECT tenant_id FROM payments") == [("acme",), ("acme",)]


async def test_mutual_tls_from_the_command_line(start_paygrid, tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    server = ca.issue("server", "paygrid", server=True)
    client = ca.issue("client", "ops-console", server=False)
    paygrid = await start_paygrid(tls=TlsConfig(server.cert, server.key, ca.files.cert))
    target = f"127.0.0.1:{paygrid.app.port}"
    args = ("pay", "--payer", PAYER, "--leg", "merchant_0001:USD:100")
    code, out, err = await paygrid_cli(target, "--tls-ca", str(ca.files.cert),
                                       "--tls-cert", str(client.cert), "--tls-key",
                                       str(client.key), "--tls-server-name", "localhost", *args)
    assert code == 0 and "SUCCEEDED" in out, err
    code, _, err = await paygrid_cli(target, "--max-attempts", "1", "--tls-ca",
                                     str(ca.files.cert), *args)
    assert code == 3 and "UNAVAILABLE" in err  # no client certificate: no handshake
    code, _, err = await paygrid_cli(target, "--tls-ca", str(tmp_path / "missing.pem"), *args)
    assert code == 2 and "missing.pem" in err
    assert len(paygrid.captured_everywhere()) == 1


async def test_batch_submit_status_and_results(paygrid, tmp_path: Path) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    source = tmp_path / "payroll.csv"
    source.write_text("reference,payee,currency,amount_minor\n" + "".join(
        f"emp-{i},employee_{i},EUR,{250_000 + i}\n" for i in range(20))
        + "emp-bad,employee_x,EUR,12.50\n")
    results = tmp_path / "results.jsonl"

    code, out, err = await paygrid_cli(target, "--output", "json", "batch", "submit",
                                       str(source), "--payer", "acct_payroll",
                                       "--results-file", str(results), "--group-size", "5")
    assert code == 0, err
    assert "submitting batch" in err and "21/21" in err  # progress on stderr
    (summary,) = json_lines(out)
    batch_id = summary["batchId"]
    assert batch_id.startswith("file-") and summary["status"] == "BATCH_STATUS_COMPLETED"
    assert summary["counts"]["succeeded"] == "20" and summary["counts"]["rejected"] == "1"
    by_reference = {line["reference"]: line for line in json_lines(results.read_text())}
    assert len(by_reference) == 21 and by_reference["emp-bad"]["status"] == "REJECTED"

    # The same file again resumes the same batch: nothing is paid twice;
    # human output, results next to the file by default.
    code, out, err = await paygrid_cli(target, "batch", "submit", str(source),
                                       "--payer", "acct_payroll")
    assert code == 0, err
    assert f"resuming batch {batch_id}" in err and "COMPLETED" in out
    assert len(json_lines((tmp_path / "payroll.csv.results.jsonl").read_text())) == 21
    assert len(paygrid.captured_everywhere()) == 20

    code, out, _ = await paygrid_cli(target, "batch", "status", batch_id)
    assert code == 0
    assert "COMPLETED" in out and "succeeded=20" in out and "submissions  2" in out
    code, out, _ = await paygrid_cli(target, "--output", "json", "batch", "status", batch_id)
    assert code == 0 and json_lines(out)[0]["counts"]["total"] == "21"

    code, out, _ = await paygrid_cli(target, "batch", "results", batch_id, "--status",
                                     "rejected")
    assert code == 0
    assert "emp-bad" in out and "INVALID_ITEM" in out and "emp-1 " not in out
    code, out, _ = await paygrid_cli(target, "--output", "json", "batch", "results", batch_id)
    items = json_lines(out)
    assert [i["transaction"]["reference"] for i in items][:2] == ["emp-0", "emp-1"]
    assert len(items) == 21

    code, _, err = await paygrid_cli(target, "batch", "status", "no-such-batch")
    assert code == 2 and "NOT_FOUND" in err


async def test_a_batch_file_with_an_unreadable_line_is_refused_before_sending(
        paygrid, tmp_path: Path) -> None:
    source = tmp_path / "payouts.jsonl"
    source.write_text('{"reference": "s1", "payee": "p", "currency": "USD", "amount_minor": 5}\n'
                      "not json\n")
    code, _, err = await paygrid_cli(f"127.0.0.1:{paygrid.app.port}", "batch", "submit",
                                     str(source), "--payer", "acct_payroll")
    assert code == 2 and "payouts.jsonl:2" in err
    assert paygrid.rows("SELECT count(*) FROM batches") == [(0,)]


async def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "paygrid"
    process = await asyncio.create_subprocess_exec(
        str(script), "--help", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0 and b"batch" in out
