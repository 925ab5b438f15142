"""A retried Pay never charges twice; a reused key with another body is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model.limits import METADATA_MAX_ENTRIES
from paygrid_server.storage.postgres.payment_store import PostgresPaymentStore
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from tests.conftest import leg, pay_request, rich_status
from tests.support.ledger_check import assert_books_agree
from tests.support.server_process import wait_for


async def test_replay_returns_the_first_answer_without_calling_the_channel(paygrid) -> None:
    request = pay_request("same-key", leg("merchant_0001"), leg("merchant_0002", "EUR", 250))
    first = (await paygrid.stub.Pay(request)).payment
    requests_after_first = dict(paygrid.ledger("card").charge_requests)
    replay = (await paygrid.stub.Pay(request)).payment
    assert replay == first
    assert paygrid.ledger("card").charge_requests == requests_after_first
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]


def metadata_in_two_orders() -> tuple[dict[str, str], dict[str, str]]:
    """One metadata map written in two orders that a server reading the wire
    also iterates in two orders (a map's order is not part of its value)."""
    # Parsed, a map iterates in its hash table's order (seeded per process):
    # insertion order shows only among colliding keys. With 6 entries about
    # 1 process in 20 had none (every order alike); with the most a request
    # may carry, collisions are all but certain (0 of 60 processes alike).
    entries = [(f"k{i}", f"v{i}") for i in range(METADATA_MAX_ENTRIES)]
    orders: dict[tuple[str, ...], dict[str, str]] = {}
    for shift in range(len(entries)):
        metadata = dict(entries[shift:] + entries[:shift])
        received = pb.PayRequest.FromString(pb.PayRequest(metadata=metadata).SerializeToString())
        orders.setdefault(tuple(received.metadata), metadata)
    assert len(orders) >= 2, "every order arrived alike: the test would prove nothing"
    first, second = list(orders.values())[:2]
    return first, second


async def test_a_replay_with_its_metadata_in_another_order_is_the_same_request(paygrid) -> None:
    first_order, second_order = metadata_in_two_orders()
    first = (await paygrid.stub.Pay(pay_request("k-meta", leg(), metadata=first_order))).payment
    replay = (await paygrid.stub.Pay(pay_request("k-meta", leg(), metadata=second_order))).payment
    assert replay == first
    assert paygrid.ledger("card").charge_requests == {f"{first.payment_id}.0": 1}


async def test_same_key_with_another_body_is_failed_precondition(paygrid) -> None:
    await paygrid.stub.Pay(pay_request("k-body", leg(amount_minor=1_000)))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-body", leg(amount_minor=1_001)))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = rich_status(error.value)
    assert details["ErrorInfo"].reason == "IDEMPOTENCY_CONFLICT"
    assert details["PreconditionFailure"].violations[0].subject == "idempotency_key"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]


RETRIES_OF_ONE_KEY = 64


async def test_concurrent_retries_of_one_key_make_one_payment_and_one_charge_per_leg(
        paygrid) -> None:
    # The card charge is held until every caller has had a first answer, so
    # all 64 really overlap the execution; then each retries until answered.
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    request = pay_request("k-race", leg("merchant_0001"), leg("merchant_0002", channel="wallet"))
    first_answers: list[grpc.StatusCode] = []

    async def caller() -> pb.Payment:
        while True:
            try:
                payment = (await paygrid.stub.Pay(request, timeout=30)).payment
            except grpc.aio.AioRpcError as error:
                # Still running: retry later, never a second execution.
                assert error.code() == grpc.StatusCode.ABORTED, error
                delay_ms = rich_status(error)["RetryInfo"].retry_delay.ToMilliseconds()
                assert delay_ms > 0
                first_answers.append(error.code())
                await asyncio.sleep(delay_ms / 1_000)
                continue
            first_answers.append(grpc.StatusCode.OK)
            return payment

    callers = [asyncio.ensure_future(caller()) for _ in range(RETRIES_OF_ONE_KEY)]
    await wait_for(lambda: len(first_answers) >= RETRIES_OF_ONE_KEY - 1,
                   "every duplicate to be refused while the first runs", timeout_s=30)
    assert set(first_answers) == {grpc.StatusCode.ABORTED}
    card.faults.release_charges()
    payments = await asyncio.gather(*callers)
    assert all(payment == payments[0] for payment in payments)  # every answer the same
    payment_id = payments[0].payment_id
    assert payments[0].status == pb.PAYMENT_STATUS_SUCCEEDED
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]
    assert card.ledger.charge_requests == {f"{payment_id}.0": 1}
    assert paygrid.ledger("wallet").charge_requests == {f"{payment_id}.1": 1}
    assert len(paygrid.captured_everywhere()) == 2
    # Once finished, a retry gets the stored answer.
    assert (await paygrid.stub.Pay(request)).payment == payments[0]
    assert_books_agree(paygrid)


async def test_a_retry_that_read_the_payment_mid_execution_answers_its_final_state(
        paygrid, monkeypatch) -> None:
    # The retry reads the stored payment while the first call still runs,
    # and only gets to look at it after that call has finished (a slow read
    # under load). It must answer the finished payment, not the stale
    # PROCESSING snapshot with PENDING legs.
    read_back = asyncio.Event()
    may_go_on = asyncio.Event()

    def slowed(insert_payment):
        async def insert_then_wait(self, payment):
            existing = await insert_payment(self, payment)
            if existing is not None and not read_back.is_set():
                read_back.set()
                await may_go_on.wait()
            return existing
        return insert_then_wait

    for store in (SqlitePaymentStore, PostgresPaymentStore):
        monkeypatch.setattr(store, "insert_payment", slowed(store.insert_payment))
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    request = pay_request("k-stale", leg())
    first = asyncio.ensure_future(paygrid.stub.Pay(request, timeout=30))
    await asyncio.wait_for(card.faults.held(1), 60)  # the first call is charging
    retry = asyncio.ensure_future(paygrid.stub.Pay(request, timeout=30))
    await asyncio.wait_for(read_back.wait(), 30)  # the retry holds a PROCESSING snapshot
    card.faults.release_charges()
    answered = (await first).payment
    assert answered.status == pb.PAYMENT_STATUS_SUCCEEDED
    may_go_on.set()
    assert (await retry).payment == answered
