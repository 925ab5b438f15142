"""`paygrid-server reconcile` as its own process against a paygrid database
and a live channel (a simulator over gRPC, read with ListCharges): no
difference after payments, refunds and a batch; each kind of difference
reported when the books are made to disagree."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import grpc
import pytest

from paygrid.channel.v1 import payment_channel_pb2 as channel_pb
from paygrid.channel.v1 import payment_channel_pb2_grpc as channel_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model import clock
from paygrid_server.domain.model.money import Money
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import channel, leg, money, pay_request
from tests.support.server_process import ROOT, free_port, write_config

pytestmark = pytest.mark.sqlite_only  # the command is run on the test's SQLite file


async def _reconcile(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paygrid_server", "reconcile", "--config", str(config), *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode() + err.decode()


async def test_books_agree_then_every_kind_of_difference_is_reported(start_paygrid,
                                                                    tmp_path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    try:
        paygrid = await start_paygrid((channel("card", target=f"127.0.0.1:{sim_port}"),))
        paid = [(await paygrid.stub.Pay(pay_request(f"k-{i}", leg(amount_minor=1_000 + i),
                                                    leg("m2", "EUR", 50)))).payment
                for i in range(3)]
        declined = (await paygrid.stub.Pay(pay_request(
            "k-no", leg("decline_do_not_honor")))).payment
        assert declined.status == pb.PAYMENT_STATUS_FAILED
        await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
            payment_id=paid[0].payment_id, idempotency_key="r-1",
            legs=[pb.RefundLeg(leg_index=0, amount=money("USD", 400))]))
        await submit(batch_stub(paygrid.channel), header("payouts"),
                     chunk(*(tx(f"b-{i}") for i in range(20))))
        config = write_config(tmp_path / "reconcile.toml", free_port(), paygrid.database,
                              {"card": sim_port})

        code, out = await _reconcile(config)
        assert code == 0, out
        assert "1 channels, 26 charges held, 26 successes recorded: no differences" in out

        # The channel's report is paged and complete.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sim_port}") as ch:
            pages = [page async for page in channel_grpc.PaymentChannelStub(ch).ListCharges(
                channel_pb.ListChargesRequest(page_size=10))]
        assert [len(p.charges) for p in pages] == [10, 10, 7]  # 26 captured + 1 declined

        # Now make the books disagree, once per kind.
        card.ledger.charge("stray-key", "acct_x", "payee_stray", Money("EUR", 777),
                           clock.now_us())  # extra: nobody at paygrid asked for it
        del card.ledger.charges[f"{paid[1].payment_id}.0"]  # missing: paygrid says paid
        with sqlite3.connect(paygrid.database) as db:  # mismatched: another amount
            db.execute("UPDATE payment_legs SET amount_minor = amount_minor + 1 "
                       "WHERE payment_id = ? AND leg_index = 1", (paid[2].payment_id,))

        code, out = await _reconcile(config)
        assert code == 1, out
        lines = out.splitlines()
        assert sorted(line.split()[0] for line in lines[:-1]) == ["EXTRA", "MISMATCHED",
                                                                  "MISSING"]
        assert "payee_stray" not in out and "stray-key" in out
        assert lines[-1].endswith("1 extra, 1 mismatched, 1 missing")

        code, out = await _reconcile(config, "--output", "json")
        report = json.loads(out)
        assert code == 1
        assert sorted(d["kind"] for d in report["differences"]) == ["extra", "mismatched",
                                                                   "missing"]
        assert {d["channel"] for d in report["differences"]} == {"card"}
    finally:
        await sim_server.stop(None)


async def test_a_channel_that_cannot_be_reached_is_exit_code_2(paygrid, tmp_path) -> None:
    config = write_config(tmp_path / "reconcile.toml", free_port(), paygrid.database,
                          {"card": free_port()})
    code, out = await _reconcile(config)
    assert code == 2
    assert "card" in out and "ListCharges" in out


async def test_nothing_to_reconcile_is_not_a_clean_bill(paygrid, tmp_path) -> None:
    # No channel with a target: the default simulators live inside the server.
    config = write_config(tmp_path / "reconcile.toml", free_port(), paygrid.database, {})
    code, out = await _reconcile(config)
    assert code == 2
    assert "no channel could be reconciled" in out and out.count("SKIPPED") == 3
