"""Races: one batch resubmitted from several streams at once charges each
item exactly once; a read made after a commit sees it, however many reads
overlap; the resolver never redoes a payment that finished meanwhile. (Races on one Pay key are in test_idempotency.py, concurrent
refunds in test_refunds.py.) Streams that find the batch still running get
ABORTED with a RetryInfo and retry; once it is done, a resubmission gets the
stored results as `already_processed`. The long version is
scripts/reliability_faults."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import payment_service_pb2 as pay_pb
from paygrid_server.transport.event_messages import ProtobufSnapshots
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Leg, LegRequest, Payment, PaymentMode
from paygrid_server.storage.postgres.payment_store import PostgresPaymentStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from tests.support.batch_client import BatchReply, batch_stub, chunk, header, open_stream, submit, tx
from tests.conftest import channel, leg, pay_request, rich_status, slow
from tests.support.ledger_check import assert_books_agree
from tests.support.server_process import wait_for

STREAMS = 3  # each waits out the RetryInfo (1 s) per turn; the script runs 8
ITEMS = 60


def _items() -> list[pb.BatchTransaction]:
    return [tx(f"r{i:02d}", payee=f"payee_{i:02d}") for i in range(ITEMS)]


async def _submit_until_done(stub, first_answers: list[str], items) -> BatchReply:
    """Resubmits the whole batch until a stream runs to its summary."""
    while True:
        try:
            reply = await submit(stub, header(max_group_size=10, parallelism=2), chunk(*items),
                                 timeout=60)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED, error
            delay_ms = rich_status(error)["RetryInfo"].retry_delay.ToMilliseconds()
            assert delay_ms > 0
            first_answers.append("ABORTED")
            await asyncio.sleep(delay_ms / 1_000)
            continue
        first_answers.append("DONE")
        return reply


def _assert_each_item_charged_once(paygrid, replies: list[BatchReply]) -> None:
    card = paygrid.ledger("card")
    captured = card.captured()
    assert Counter(c.payee for c in captured) == Counter(f"payee_{i:02d}" for i in range(ITEMS))
    by_reference = {f"r{c.payee.removeprefix('payee_')}": c.charge_id for c in captured}
    for reply in replies:  # every stream ends with the complete, same answer
        assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
        assert reply.summary.counts.succeeded == ITEMS
        assert sorted(reply.reported) == sorted(by_reference)  # each told once per stream
        assert {ref: r.channel_reference for ref, r in reply.results.items()} == by_reference
    assert_books_agree(paygrid)


async def test_one_batch_submitted_from_several_streams_at_once_charges_each_item_once(
        paygrid) -> None:
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the first stream cannot finish before the others arrive
    stub = batch_stub(paygrid.channel)
    first_answers: list[str] = []
    streams = [asyncio.ensure_future(_submit_until_done(stub, first_answers, _items()))
               for _ in range(STREAMS)]
    await wait_for(lambda: len(first_answers) >= STREAMS - 1,
                   "every other stream to be turned away", timeout_s=30)
    assert first_answers[:STREAMS - 1] == ["ABORTED"] * (STREAMS - 1)
    card.faults.release_charges()
    replies = await asyncio.gather(*streams)
    [winner] = [r for r in replies if r.groups]
    assert len(winner.reported) == ITEMS and not winner.already_processed
    for reply in replies:
        if reply is not winner:
            assert not reply.groups and len(reply.already_processed) == ITEMS
    assert all(n == 1 for n in card.ledger.charge_requests.values())
    _assert_each_item_charged_once(paygrid, replies)


async def test_a_dropped_batch_resumed_from_several_streams_at_once_charges_each_item_once(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(30)),))
    stub = batch_stub(paygrid.channel)
    items = _items()
    call, outgoing = open_stream(stub)
    for message in (header(max_group_size=10, parallelism=2), chunk(*items)):
        await outgoing.put(message)
    assert (await call.read()).WhichOneof("kind") == "group"
    call.cancel()  # dropped with groups mid-charge and items not yet grouped
    first_answers: list[str] = []
    replies = await asyncio.gather(*(_submit_until_done(stub, first_answers, items)
                                     for _ in range(STREAMS)))
    assert "DONE" in first_answers
    _assert_each_item_charged_once(paygrid, replies)


@pytest.mark.sqlite_only
async def test_sqlite_reads_see_every_commit_made_before_they_start(tmp_path) -> None:
    # The reads share one connection. A cursor left open across awaits (one
    # leg row per await) kept its WAL snapshot open, and every read
    # interleaved meanwhile saw data older than its own start: a retried Pay
    # was answered PROCESSING with PENDING legs after the payment succeeded.
    database = await SqliteDatabase.open(tmp_path / "reads.sqlite3")
    store = SqlitePaymentStore(database, ProtobufSnapshots())

    def payment(n: int, legs: int) -> Payment:
        return Payment(
            payment_id=f"pay_{n:03d}", tenant_id="dev", idempotency_key=f"k-{n}",
            fingerprint="f", payer="acct_1", mode=PaymentMode.ALL_OR_NOTHING, metadata={},
            received_at_us=n, legs=[Leg(i, LegRequest(f"merchant_{i}", Money("USD", 100), "", ""))
                                    for i in range(legs)])

    watched = payment(0, 1)
    for stored in (watched, *(payment(n, limits.MAX_LEGS_PER_PAYMENT) for n in range(1, 41))):
        assert await store.insert_payment(stored) is None
    listing = True

    async def lister() -> None:  # long reads: 40 payments of 16 legs each
        while listing:
            await store.list_payments("dev", 100, None)

    listers = [asyncio.ensure_future(lister()) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        for commit in range(1, 11):  # each commit, then reads that must see it
            watched.legs[0].attempts = commit
            await store.save_payment_outcome(watched)  # committed when this returns
            seen = [(await store.get_payment("pay_000")).legs[0].attempts for _ in range(5)]
            assert seen == [commit] * 5
    finally:
        listing = False
        await asyncio.gather(*listers)
        await database.close()


async def test_the_resolver_never_redoes_a_payment_that_finished_after_it_was_listed(
        start_paygrid, monkeypatch) -> None:
    # The resolver lists PROCESSING payments, then skips those still running.
    # A payment that finishes between the two was taken for abandoned, and
    # its stale copy (PENDING legs) settled and completed a second time.
    paygrid = await start_paygrid(recovery_interval_ms=20)
    listed_running = asyncio.Event()
    may_go_on = asyncio.Event()
    passes_after = 0

    def slowed(list_processing_payments):
        async def list_then_wait(self):
            nonlocal passes_after
            payments = await list_processing_payments(self)
            if may_go_on.is_set():
                passes_after += 1
            elif any(p.idempotency_key == "k-listed" for p in payments):
                listed_running.set()
                await may_go_on.wait()
            return payments
        return list_then_wait

    for store in (SqlitePaymentStore, PostgresPaymentStore):
        monkeypatch.setattr(store, "list_processing_payments",
                            slowed(store.list_processing_payments))
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    call = asyncio.ensure_future(paygrid.stub.Pay(pay_request("k-listed", leg()), timeout=30))
    await asyncio.wait_for(listed_running.wait(), 30)  # listed while it runs
    card.faults.release_charges()
    answered = (await call).payment
    assert answered.status == pay_pb.PAYMENT_STATUS_SUCCEEDED
    may_go_on.set()
    await wait_for(lambda: passes_after >= 1, "the resolver's next pass", timeout_s=30)
    stored = (await paygrid.stub.GetPayment(
        pay_pb.GetPaymentRequest(payment_id=answered.payment_id))).payment
    assert stored == answered  # not completed a second time
    assert_books_agree(paygrid)
