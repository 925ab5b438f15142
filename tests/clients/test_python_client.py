"""The Python client library (clients/python/paygrid_client) against a real
paygrid on a loopback port: async and sync clients, retries that reuse the
one idempotency key of a logical payment, typed errors, deadlines, API keys
and TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client import (
    NO_RETRIES,
    AsyncPaygridClient,
    CallTimeouts,
    Leg,
    PaygridClient,
    PaygridError,
    RefundLeg,
    RetryEvent,
    RetryPolicy,
)
from paygrid_server.api_keys import ApiKeyEntry, api_key_sha256
from paygrid_server.config import AuthConfig, TlsConfig
from tests.support.local_process import free_loopback_port
from tests.support.batch_client import batch_stub, chunk, header, open_stream, tx
from tests.support.certificates import TestCa
from tests.conftest import channel, slow

PAYER = "acct_000012345678"
# Quick retries, so a test waits little; still bounded.
QUICK_RETRIES = RetryPolicy(max_attempts=50, initial_backoff_s=0.02, max_backoff_s=0.2)


def target_of(paygrid) -> str:
    return f"127.0.0.1:{paygrid.app.port}"


def stored_keys(paygrid) -> list[str]:
    return [key for (key,) in paygrid.rows("SELECT idempotency_key FROM payments")]


async def test_async_client_pays_accepted_only_and_reads_the_outcome_later(paygrid) -> None:
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # still running, provably, when pay() returns
    async with AsyncPaygridClient(target_of(paygrid)) as client:
        accepted = await client.pay(PAYER, [Leg("merchant_7", "USD", 700, channel="card")],
                                    wait=pb.PAY_WAIT_ACCEPTED)
        assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
        card.faults.release_charges()
        await paygrid.app.in_flight.drain(timeout_s=30)
        final = await client.get_payment(accepted.payment_id)
    assert final.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert stored_keys(paygrid) == [accepted.idempotency_key]


async def test_async_client_pays_gets_lists_pages_and_refunds(paygrid) -> None:
    async with AsyncPaygridClient(target_of(paygrid)) as client:
        trip = await client.pay(PAYER, [Leg("hotel_4711", "EUR", 45_000),
                                        Leg("flight_0815", "EUR", 31_999, channel="card")])
        assert trip.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert trip.idempotency_key.startswith("pay-")  # made by the client
        assert [leg.amount.amount_minor for leg in trip.legs] == [45_000, 31_999]
        assert trip.legs[1].channel == "card"
        assert await client.get_payment(trip.payment_id) == trip

        others = [await client.pay(PAYER, [Leg(f"merchant_{i}", "USD", 100 + i)],
                                   mode=pb.PAYMENT_MODE_INDEPENDENT,
                                   metadata={"order": str(i)}) for i in range(2)]
        pages = [page async for page in client.list_payment_pages(page_size=2)]
        assert [len(page.payments) for page in pages] == [2, 1]
        assert pages[-1].next_page_token == ""
        newest_first = [p.payment_id for p in reversed([trip, *others])]
        assert [p.payment_id async for p in client.list_payments(page_size=2)] == newest_first
        assert others[0].mode == pb.PAYMENT_MODE_INDEPENDENT
        assert dict(others[0].metadata) == {"order": "0"}

        partial = await client.refund_payment(trip.payment_id,
                                              [RefundLeg(0, "EUR", 5_000)], reason="late")
        assert partial.refund.status == pb.REFUND_STATUS_SUCCEEDED
        assert partial.refund.idempotency_key.startswith("refund-")
        assert partial.payment.legs[0].refunded_amount_minor == 5_000
        rest = await client.refund_payment(trip.payment_id)  # everything still refundable
        assert [leg.refunded_amount_minor for leg in rest.payment.legs] == [45_000, 31_999]
    assert len(paygrid.captured_everywhere()) == 4


async def test_sync_client_pays_gets_lists_refunds_and_runs_a_batch(paygrid) -> None:
    def scenario() -> None:
        with PaygridClient(target_of(paygrid)) as client:
            payment = client.pay(PAYER, [Leg("merchant_0001", "USD", 1_250)])
            assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
            assert client.get_payment(payment.payment_id) == payment
            assert [p.payment_id for p in client.list_payments()] == [payment.payment_id]
            page = client.list_payments_page(page_size=1)
            assert [p.payment_id for p in page.payments] == [payment.payment_id]
            refund = client.refund_payment(payment.payment_id, [RefundLeg(0)])
            assert refund.refund.status == pb.REFUND_STATUS_SUCCEEDED
            assert refund.payment.legs[0].refunded_amount_minor == 1_250

            items = [tx(f"r{i}", currency="EUR", amount_minor=100 + i) for i in range(5)]
            items.append(tx("bad", currency="EURO"))
            # chunk_items=2: the 6 items go as 3 messages after the header.
            responses = list(client.submit_batch("sync-batch", "acct_payroll", items,
                                                 chunk_items=2))
            summary = responses[-1].summary
            assert summary.status == batch_pb.BATCH_STATUS_COMPLETED
            assert (summary.counts.succeeded, summary.counts.rejected) == (5, 1)
            batch = client.get_batch("sync-batch")
            assert batch.counts.total == 6 and batch.payer == "acct_payroll"
            rejected = list(client.list_batch_items("sync-batch",
                                                    batch_pb.BATCH_ITEM_STATUS_REJECTED))
            assert [item.transaction.reference for item in rejected] == ["bad"]
            assert rejected[0].result.failure.reason == "INVALID_ITEM"
            assert len(list(client.list_batch_items("sync-batch"))) == 6

    # The server runs on this test's event loop: the blocking client runs
    # in a thread so the loop stays free to serve it.
    await asyncio.to_thread(scenario)
    assert len(paygrid.captured_everywhere()) == 6


async def test_async_client_submits_a_batch_from_an_async_iterable(paygrid) -> None:
    async def transactions():
        for i in range(3):
            yield tx(f"a{i}", currency="USD", amount_minor=500 + i)

    async with AsyncPaygridClient(target_of(paygrid)) as client:
        responses = [r async for r in client.submit_batch("async-batch", "acct_payroll",
                                                          transactions())]
        results = [item for r in responses if r.HasField("group") for item in r.group.items]
        assert sorted(item.reference for item in results) == ["a0", "a1", "a2"]
        assert responses[-1].summary.counts.succeeded == 3
        assert (await client.get_batch("async-batch")).status == batch_pb.BATCH_STATUS_COMPLETED
        stored = [item async for item in client.list_batch_items("async-batch")]
        assert [item.transaction.reference for item in stored] == ["a0", "a1", "a2"]


async def test_a_retry_after_unavailable_reuses_the_key_made_for_the_payment(
        start_paygrid) -> None:
    """The first attempts find no server (UNAVAILABLE); the server starts;
    a retry pays, with the key made once before the first attempt."""
    port = free_loopback_port()
    retries: list[RetryEvent] = []
    first_failure = asyncio.Event()

    def on_retry(event: RetryEvent) -> None:
        retries.append(event)
        first_failure.set()

    async with AsyncPaygridClient(f"127.0.0.1:{port}", retry_policy=QUICK_RETRIES,
                                  on_retry=on_retry) as client:
        paying = asyncio.create_task(client.pay(PAYER, [Leg("merchant_0001", "USD", 700)]))
        await asyncio.wait_for(first_failure.wait(), 30)
        paygrid = await start_paygrid(listen=f"127.0.0.1:{port}")
        payment = await asyncio.wait_for(paying, 60)

    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert retries[0].error.code == grpc.StatusCode.UNAVAILABLE
    assert {event.idempotency_key for event in retries} == {payment.idempotency_key}
    assert stored_keys(paygrid) == [payment.idempotency_key]
    assert len(paygrid.captured_everywhere()) == 1


async def test_concurrent_calls_with_one_key_wait_for_the_first_and_charge_once(
        start_paygrid) -> None:
    """The second call is ABORTED (REQUEST_IN_PROGRESS) while the first runs;
    the client waits at least the RetryInfo delay, retries with the same
    key and gets the stored payment."""
    paygrid = await start_paygrid((channel("card", simulator=slow(300)),))
    retries: list[RetryEvent] = []
    async with AsyncPaygridClient(target_of(paygrid), retry_policy=QUICK_RETRIES,
                                  on_retry=retries.append) as client:
        legs = [Leg("merchant_0001", "USD", 900)]
        first, second = await asyncio.gather(
            client.pay(PAYER, legs, idempotency_key="order-77"),
            client.pay(PAYER, legs, idempotency_key="order-77"))

    assert first == second
    assert first.status == pb.PAYMENT_STATUS_SUCCEEDED
    in_progress = [e for e in retries if e.error.reason == "REQUEST_IN_PROGRESS"]
    assert in_progress, retries
    for event in in_progress:
        assert event.error.code == grpc.StatusCode.ABORTED
        assert event.idempotency_key == "order-77"
        assert event.error.retry_delay_s is not None
        assert event.delay_s >= event.error.retry_delay_s
    assert stored_keys(paygrid) == ["order-77"]
    assert len(paygrid.captured_everywhere()) == 1


async def test_a_batch_still_open_elsewhere_is_resubmitted_after_its_retry_delay(
        paygrid) -> None:
    """Another stream holds the batch open: SubmitBatch is ABORTED with a
    RetryInfo; the client waits that long and resubmits once it is free."""
    stub = batch_stub(paygrid.channel)
    first, outgoing = open_stream(stub)
    await outgoing.put(header("payroll-11", payer="acct_payroll"))
    await outgoing.put(chunk(tx("e1", currency="USD")))
    async with AsyncPaygridClient(target_of(paygrid)) as observer:
        while True:  # until the other stream's header is stored
            try:
                if (await observer.get_batch("payroll-11")).status == \
                        batch_pb.BATCH_STATUS_RECEIVING:
                    break
            except PaygridError as error:
                assert error.code == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.01)

    retries: list[RetryEvent] = []

    def on_retry(event: RetryEvent) -> None:
        retries.append(event)
        outgoing.put_nowait(None)  # the other stream ends: the batch is free again

    items = [tx(f"e{i}", currency="USD") for i in range(1, 4)]
    async with AsyncPaygridClient(target_of(paygrid), on_retry=on_retry) as client:
        responses = [r async for r in client.submit_batch("payroll-11", "acct_payroll", items)]
    async for _ in first:  # the other stream's own answers
        pass

    assert retries and retries[0].error.code == grpc.StatusCode.ABORTED
    assert retries[0].error.reason == "REQUEST_IN_PROGRESS"
    assert retries[0].delay_s >= retries[0].error.retry_delay_s > 0
    assert responses[-1].summary.counts.succeeded == 3
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == [
        "payee_e1", "payee_e2", "payee_e3"]


async def test_a_replayed_key_returns_the_stored_payment_without_a_second_charge(
        paygrid) -> None:
    legs = [Leg("hotel_4711", "EUR", 45_000), Leg("flight_0815", "EUR", 31_999)]
    async with AsyncPaygridClient(target_of(paygrid)) as client:
        first = await client.pay(PAYER, legs, idempotency_key="trip-2026-0001")

    def replay() -> pb.Payment:
        with PaygridClient(target_of(paygrid)) as client:
            return client.pay(PAYER, legs, idempotency_key="trip-2026-0001")

    again = await asyncio.to_thread(replay)
    assert again == first
    assert len(paygrid.captured_everywhere()) == 2  # one charge per leg, once


async def test_errors_are_typed_with_reason_and_details_and_never_retried(paygrid) -> None:
    retries: list[RetryEvent] = []
    async with AsyncPaygridClient(target_of(paygrid), on_retry=retries.append) as client:
        with pytest.raises(PaygridError) as invalid:
            await client.pay(PAYER, [Leg("merchant_0001", "EURO", 0)],
                             idempotency_key="bad-1")
        error = invalid.value
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_REQUEST"
        assert {v.field for v in error.field_violations} == {
            "legs[0].amount.currency", "legs[0].amount.amount_minor"}
        assert error.attempts == 1 and error.idempotency_key == "bad-1" and error.method == "Pay"
        assert "legs[0].amount.currency" in str(error)

        with pytest.raises(PaygridError) as missing:
            await client.get_payment("pay_does_not_exist")
        assert (missing.value.code, missing.value.reason) == (grpc.StatusCode.NOT_FOUND,
                                                              "NOT_FOUND")

        await client.pay(PAYER, [Leg("merchant_0001", "USD", 100)], idempotency_key="same")
        with pytest.raises(PaygridError) as conflict:
            await client.pay(PAYER, [Leg("merchant_0001", "USD", 999)], idempotency_key="same")
        assert conflict.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert conflict.value.reason == "IDEMPOTENCY_CONFLICT"
        assert [v.type for v in conflict.value.precondition_violations] == [
            "IDEMPOTENCY_CONFLICT"]
    assert retries == []
    assert stored_keys(paygrid) == ["same"]
    with pytest.raises(TypeError, match="int of minor units"):
        Leg("merchant_0001", "EUR", 12.50)  # money is never a float


async def test_the_deadline_goes_with_every_attempt(paygrid) -> None:
    """A deadline too short to pay in: the server refuses it
    (DEADLINE_TOO_SHORT, not retried: the same deadline would be refused
    again), or it passes before the call gets there. Nothing is paid."""
    async with AsyncPaygridClient(target_of(paygrid), retry_policy=QUICK_RETRIES,
                                  timeouts=CallTimeouts(pay_s=0.04)) as client:
        with pytest.raises(PaygridError) as per_client:
            await client.pay(PAYER, [Leg("merchant_0001", "USD", 100)])
        with pytest.raises(PaygridError) as per_call:
            await client.pay(PAYER, [Leg("merchant_0001", "USD", 100)], timeout_s=0.001)
    for error in (per_client.value, per_call.value):
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        # Each attempt carries the deadline. One may run out in the client
        # before reaching the server (retryable: nothing ran); the first the
        # server refuses as too short is the last: had it been retried, the
        # attempts would go on to the policy's maximum.
        if error.reason == "DEADLINE_TOO_SHORT":
            assert error.attempts < QUICK_RETRIES.max_attempts
    too_short = PaygridError(grpc.StatusCode.DEADLINE_EXCEEDED, "too short",
                             reason="DEADLINE_TOO_SHORT")
    assert not QUICK_RETRIES.is_retryable(too_short, idempotent=True)
    assert stored_keys(paygrid) == []
    assert paygrid.captured_everywhere() == []


async def test_the_api_key_is_sent_on_every_call(start_paygrid, monkeypatch) -> None:
    acme_key = "pgk_acme_client_test_0123456789"
    paygrid = await start_paygrid(auth=AuthConfig((ApiKeyEntry("acme",
                                                               api_key_sha256(acme_key)),)))
    async with AsyncPaygridClient(target_of(paygrid), api_key=acme_key) as client:
        payment = await client.pay(PAYER, [Leg("merchant_0001", "USD", 100)])
        assert (await client.get_payment(payment.payment_id)) == payment
        batch = [r async for r in client.submit_batch("acme-batch", "acct_payroll",
                                                      [tx("x1")])]
        assert batch[-1].summary.counts.succeeded == 1
        assert len([i async for i in client.list_batch_items("acme-batch")]) == 1

    monkeypatch.setenv("PAYGRID_API_KEY", acme_key)
    async with AsyncPaygridClient(target_of(paygrid)) as from_environment:
        assert (await from_environment.get_payment(payment.payment_id)) == payment

    async with AsyncPaygridClient(target_of(paygrid), api_key="pgk_wrong") as stranger:
        with pytest.raises(PaygridError) as refused:
            await stranger.pay(PAYER, [Leg("merchant_0001", "USD", 100)])
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "INVALID_API_KEY" and refused.value.attempts == 1
    assert paygrid.rows("SELECT tenant_id FROM payments") == [("acme",)]


async def test_tls_and_mutual_tls(start_paygrid, tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    server = ca.issue("server", "paygrid", server=True)
    client_cert = ca.issue("client", "checkout-service", server=False)
    paygrid = await start_paygrid(tls=TlsConfig(server.cert, server.key, ca.files.cert))
    target = target_of(paygrid)

    async with AsyncPaygridClient(target, tls_ca=ca.files.cert, tls_cert=client_cert.cert,
                                  tls_key=client_cert.key,
                                  tls_server_name="localhost") as client:
        payment = await client.pay(PAYER, [Leg("merchant_0001", "USD", 100)])
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED

    def sync_pay() -> pb.Payment:
        with PaygridClient(target, tls_ca=ca.files.cert, tls_cert=client_cert.cert,
                           tls_key=client_cert.key) as client:
            return client.get_payment(payment.payment_id)

    assert await asyncio.to_thread(sync_pay) == payment

    for missing_something in ({"tls_ca": ca.files.cert},  # no client certificate
                              {}):  # plaintext
        async with AsyncPaygridClient(target, retry_policy=NO_RETRIES,
                                      **missing_something) as client:
            with pytest.raises(PaygridError) as refused:
                await client.get_payment(payment.payment_id)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        AsyncPaygridClient(target, tls_ca=ca.files.cert, tls_cert=client_cert.cert)
