"""Several replicas on one PostgreSQL database: at store level, two
PaymentStores and BatchStores with a pool each (as two replicas have) race
on the same keys, the same leg's refunds and the same batch references;
then two whole servers on one database and one channel.
What holds is held by the database (unique constraints, conditional
UPDATEs, row locks), so it holds across processes as it does here."""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.transport.event_messages import ProtobufSnapshots
from paygrid_server.domain.model.batch import (
    Batch,
    BatchHeader,
    BatchItem,
    BatchStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model import clock
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Leg,
    LegRequest,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.domain.model.errors import RequestInProgress
from paygrid_server.domain.in_flight import InFlight
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.model.refund import Refund, RefundLeg, RefundStatus
from paygrid_server.domain.payments.refund_service import (
    RefundInput,
    RefundLegInput,
    RefundService,
    validate_refund,
)
from paygrid_server.domain.model.request_validation import MoneyInput
from paygrid_server.domain.ports.payment_store import RefundExceedsRefundable
from paygrid_server.storage.postgres.batch_store import PostgresBatchStore
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.postgres.payment_store import HANDOFF_AFTER_MS, PostgresPaymentStore
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.conftest import channel, leg, money, pay_request, rich_status
from tests.support.postgres_databases import postgres_rows, require_postgres

REPLICAS = 2
CAPTURED_MINOR = 1_000


@pytest.fixture
async def replicas(postgres_databases) -> AsyncIterator[tuple[str, list[PostgresDatabase]]]:
    require_postgres()
    dsn = await postgres_databases.create()
    databases = [await PostgresDatabase.open(dsn, PostgresLimits(pool_max_connections=4))
                 for _ in range(REPLICAS)]
    yield dsn, databases
    for database in databases:
        await database.close()


def _payment(key: str, status: LegStatus = LegStatus.PENDING) -> Payment:
    leg = Leg(0, LegRequest("merchant_1", Money("EUR", CAPTURED_MINOR), "", ""),
              status=status, channel="card", first_channel="card")
    return Payment(f"pay_{uuid.uuid4().hex}", "dev", key, "fp", "acct_1",
                   PaymentMode.ALL_OR_NOTHING, [leg], {}, 1)


def _refund(payment_id: str, key: str, amount_minor: int) -> Refund:
    return Refund(f"ref_{uuid.uuid4().hex}", payment_id, key, f"fp-{key}", "",
                  [RefundLeg(0, Money("EUR", amount_minor), "card")], 1)


async def _captured_payment(store: PostgresPaymentStore) -> Payment:
    payment = _payment(f"paid-{uuid.uuid4().hex}")
    assert await store.insert_payment(payment) is None
    payment.legs[0].status, payment.status = LegStatus.SUCCEEDED, PaymentStatus.SUCCEEDED
    await store.save_payment_outcome(payment)
    return payment


async def test_one_payment_per_key_whichever_replica_takes_it(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    keys = [f"key-{n}" for n in range(20)]
    # Every key sent 3 times to each replica at once, each with its own payment id.
    attempts = [(key, stores[n % REPLICAS]) for key in keys for n in range(3 * REPLICAS)]
    outcomes = await asyncio.gather(*(store.insert_payment(_payment(key))
                                      for key, store in attempts))
    for key in keys:
        answers = [o for (k, _), o in zip(attempts, outcomes) if k == key]
        stored = [a for a in answers if a is None]
        assert len(stored) == 1, f"{key}: stored {len(stored)} times"
        assert len({a.payment_id for a in answers if a is not None}) == 1  # all see the winner
    assert postgres_rows(dsn, "SELECT count(*), count(DISTINCT idempotency_key) FROM payments") \
        == [(len(keys), len(keys))]
    assert postgres_rows(dsn, "SELECT count(*) FROM payment_legs") == [(len(keys),)]
    assert postgres_rows(dsn, "SELECT count(*) FROM charge_attempts") == [(len(keys),)]


async def test_refunds_racing_on_two_replicas_never_exceed_the_capture(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    payment = await _captured_payment(stores[0])
    # 7 refunds of 150 on each replica: 14 x 150 = 2,100 asked of 1,000 captured.
    refunds = [_refund(payment.payment_id, f"r-{n}", 150) for n in range(7 * REPLICAS)]
    outcomes = await asyncio.gather(
        *(stores[n % REPLICAS].insert_refund(r) for n, r in enumerate(refunds)),
        return_exceptions=True)
    accepted = [r for r, o in zip(refunds, outcomes) if o is None]
    refused = [o for o in outcomes if isinstance(o, RefundExceedsRefundable)]
    assert len(accepted) + len(refused) == len(refunds), outcomes
    assert len(accepted) == CAPTURED_MINOR // 150  # 6: as many as fit, no more
    assert postgres_rows(dsn, "SELECT refunded_minor, refund_pending_minor FROM payment_legs") \
        == [(0, 150 * len(accepted))]
    assert postgres_rows(dsn, "SELECT count(*) FROM refunds") == [(len(accepted),)]
    assert postgres_rows(dsn, "SELECT count(*) FROM refund_legs") == [(len(accepted),)]

    # Every accepted refund confirmed by the channel, reported by both replicas at once:
    # each amount moves from pending to refunded once.
    for refund in accepted:
        refund.status = refund.legs[0].status = RefundStatus.SUCCEEDED
    await asyncio.gather(*(store.save_refund_outcome(refund)
                           for refund in accepted for store in stores))
    assert postgres_rows(dsn, "SELECT refunded_minor, refund_pending_minor FROM payment_legs") \
        == [(150 * len(accepted), 0)]
    with pytest.raises(RefundExceedsRefundable):
        await stores[1].insert_refund(_refund(payment.payment_id, "one-more", 150))


async def test_one_refund_per_key_whichever_replica_takes_it(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    payment = await _captured_payment(stores[0])
    outcomes = await asyncio.gather(*(
        stores[n % REPLICAS].insert_refund(_refund(payment.payment_id, "same-key", 400))
        for n in range(4 * REPLICAS)))
    assert sum(o is None for o in outcomes) == 1
    assert len({o.refund_id for o in outcomes if o is not None}) == 1
    assert postgres_rows(dsn, "SELECT refund_pending_minor FROM payment_legs") == [(400,)]


def _items(first_seq: int, references: range) -> list[BatchItem]:
    return [BatchItem(first_seq + n, f"ref-{r}", f"payee_{r}", Money("EUR", 100), "", None,
                      "card") for n, r in enumerate(references)]


async def test_a_refund_retry_on_another_replica_while_it_may_still_run_is_aborted(
        replicas) -> None:
    _, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    payment = await _captured_payment(stores[0])
    asked = RefundInput(payment.payment_id, "refund-in-progress",
                        [RefundLegInput(0, MoneyInput("EUR", 400, None))], "")
    # Replica A stored the refund and is (as far as B can tell) charging it back now.
    running = _refund(payment.payment_id, asked.idempotency_key, 400)
    running.fingerprint = validate_refund(asked).fingerprint()
    running.created_at_us = clock.now_us()
    assert await stores[0].insert_refund(running) is None
    on_a, on_b = (RefundService(store, {}, InFlight(), PaymentsFirst(0)) for store in stores)
    with pytest.raises(RequestInProgress):
        await on_b.refund("dev", asked)
    # A's own refund, not running in A: its execution ended unresolved, so a
    # retry there gets it as it stands, for the resolver to finish.
    refund, _ = await on_a.refund("dev", asked)
    assert (refund.refund_id, refund.status) == (running.refund_id, RefundStatus.PENDING)
    # Past the hand-off, B's resolver takes it up: then B answers it as it stands too.
    running.created_at_us = clock.now_us() - (HANDOFF_AFTER_MS + 1_000) * 1_000
    assert not stores[1].refund_may_be_running_elsewhere(running)
    assert stores[1].refund_may_be_running_elsewhere(
        await stores[1].get_refund_by_key(payment.payment_id, asked.idempotency_key))


async def test_batch_items_are_stored_once_whichever_replica_ingests_them(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresBatchStore(d, ProtobufSnapshots()) for d in databases]
    header = BatchHeader("payroll", "acct_1", GroupingPolicy.CHANNEL, 100, 4)
    # Each replica makes its own uid for the batch_id; one of them is kept.
    inserted = await asyncio.gather(*(s.insert_batch(Batch(
        "dev", "payroll", f"bat_{n}", header, header.fingerprint(), BatchStatus.RECEIVING, 1, 1))
        for n, s in enumerate(stores)))
    assert sum(b is None for b in inserted) == 1
    [uid] = {b.uid for b in inserted if b is not None}
    # The same batch resubmitted to another replica while the first is still
    # storing it: the two overlap on half their references, chunk by chunk.
    chunks = [(stores[0], 1, _items(1 + 50 * c, range(50 * c, 50 * c + 50))) for c in range(8)]
    chunks += [(stores[1], 2, _items(1_001 + 50 * c, range(200 + 50 * c, 250 + 50 * c)))
               for c in range(8)]
    outcomes = await asyncio.gather(*(store.insert_items(uid, submission, items, 0)
                                      for store, submission, items in chunks))
    new = [i.reference for o in outcomes for i in o.new]
    resent = [i.reference for o in outcomes for i in o.resent]
    assert not [r for o in outcomes for r in o.refused]
    assert len(new) == len(set(new)) == 600  # references 0..599, each stored once
    # Each reference both sent is a resend for whichever came second.
    assert sorted(resent) == sorted(f"ref-{r}" for r in range(200, 400))
    assert postgres_rows(dsn, "SELECT count(*), count(DISTINCT reference) FROM batch_items") \
        == [(600, 600)]


@pytest.mark.postgresql_only
async def test_two_servers_on_one_database_pay_once_per_key_and_refund_within_the_capture(
        start_paygrid, postgres_databases) -> None:
    """Two whole servers (each its pool, its in-process state) on one
    database and one channel, as two replicas behind a load balancer."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    try:
        dsn = await postgres_databases.create()
        channels = (channel("card", target=f"127.0.0.1:{sim_port}"),)
        a = await start_paygrid(channels, postgres_dsn=dsn)
        b = await start_paygrid(channels, postgres_dsn=dsn)
        keys = [f"k-{n}" for n in range(8)]
        sent = [(key, replica) for key in keys for replica in (a, b, a, b)]
        answers = await asyncio.gather(*(r.stub.Pay(pay_request(key), timeout=30)
                                         for key, r in sent), return_exceptions=True)
        for key in keys:
            mine = [x for (k, _), x in zip(sent, answers) if k == key]
            # A retry that meets the first execution, in either replica, is
            # ABORTED; every other answer is the one payment.
            for x in mine:
                if isinstance(x, grpc.aio.AioRpcError):
                    assert x.code() == grpc.StatusCode.ABORTED, x
            assert len({x.payment.payment_id for x in mine
                        if not isinstance(x, BaseException)}) == 1
        assert sorted(card.ledger.charge_requests.values()) == [1] * len(keys)

        paid = await a.stub.Pay(pay_request("to-refund", leg(currency="EUR", amount_minor=1_000)),
                                timeout=30)
        refunds = [pb.RefundPaymentRequest(
            payment_id=paid.payment.payment_id, idempotency_key=f"r-{n}",
            legs=[pb.RefundLeg(leg_index=0, amount=money("EUR", 300))]) for n in range(6)]
        outcomes = await asyncio.gather(*((a, b)[n % 2].stub.RefundPayment(r, timeout=30)
                                          for n, r in enumerate(refunds)),
                                        return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert all(rich_status(o)["ErrorInfo"].reason == "REFUND_EXCEEDS_CAPTURED"
                   for o in refused), refused
        assert len(outcomes) - len(refused) == 3  # 3 x 300 fit in 1,000; a fourth does not
        charge = card.ledger.get(f"{paid.payment.payment_id}.0")
        assert charge.refunded_minor == 900
        assert a.rows("SELECT refunded_minor, refund_pending_minor FROM payment_legs "
                      "WHERE payment_id = ?", (paid.payment.payment_id,)) == [(900, 0)]
    finally:
        await sim_server.stop(None)


@pytest.mark.postgresql_only
async def test_a_retry_on_another_replica_while_the_first_runs_is_aborted_not_run_again(
        start_paygrid, postgres_databases) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    try:
        dsn = await postgres_databases.create()
        channels = (channel("card", target=f"127.0.0.1:{sim_port}", timeout_ms=20_000),)
        a = await start_paygrid(channels, postgres_dsn=dsn)
        b = await start_paygrid(channels, postgres_dsn=dsn)
        card.faults.hold_charges()  # A's charge waits at the channel
        request = pay_request("k-held")
        first = asyncio.ensure_future(a.stub.Pay(request, timeout=30))
        await asyncio.wait_for(card.faults.held(1), 60)  # A's charge is at the channel
        with pytest.raises(grpc.aio.AioRpcError) as retried:
            await b.stub.Pay(request, timeout=10)
        assert retried.value.code() == grpc.StatusCode.ABORTED, retried.value
        details = rich_status(retried.value)
        assert details["ErrorInfo"].reason == "REQUEST_IN_PROGRESS"
        assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0

        card.faults.release_charges()
        paid = (await first).payment
        assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert (await b.stub.Pay(request, timeout=10)).payment == paid
        assert card.ledger.charge_requests == {f"{paid.payment_id}.0": 1}
    finally:
        await sim_server.stop(None)


@pytest.mark.postgresql_only
async def test_a_retry_on_another_replica_gets_a_payment_whose_execution_ended_unresolved(
        start_paygrid, postgres_databases) -> None:
    """The other side of the rule above: once A stored an outcome it could
    not finish (the channel vanished with the answer), nothing runs any more
    and B answers the payment as stored, as A would."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    dsn = await postgres_databases.create()
    channels = (channel("card", target=f"127.0.0.1:{sim_port}", timeout_ms=5_000),)
    a = await start_paygrid(channels, postgres_dsn=dsn)
    b = await start_paygrid(channels, postgres_dsn=dsn)
    request = pay_request("k-vanished", leg("hang_after_charge_1"))
    first = asyncio.ensure_future(a.stub.Pay(request, timeout=30))
    await card.wait_until(lambda: bool(card.ledger.charges), "the charge to land")
    await sim_server.stop(None)
    unresolved = (await first).payment
    assert unresolved.status == pb.PAYMENT_STATUS_PROCESSING
    assert unresolved.legs[0].status == pb.LEG_STATUS_UNKNOWN
    assert (await b.stub.Pay(request, timeout=10)).payment == unresolved


@pytest.mark.postgresql_only
async def test_a_replica_leaves_another_replicas_payment_in_flight_alone(
        start_paygrid, postgres_databases) -> None:
    """B's resolver runs every 50 ms while A's charge takes 1.5 s: B must not
    take A's live payment for an abandoned one (it would fence the key and
    fail a payment the channel was about to capture)."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour(latency_ms=1_500))
    try:
        dsn = await postgres_databases.create()
        channels = (channel("card", target=f"127.0.0.1:{sim_port}", timeout_ms=10_000),)
        a = await start_paygrid(channels, postgres_dsn=dsn)
        b = await start_paygrid(channels, postgres_dsn=dsn, recovery_interval_ms=50)
        paid = await a.stub.Pay(pay_request("slow-1"), timeout=30)
        assert paid.payment.status == pb.PAYMENT_STATUS_SUCCEEDED, paid.payment
        assert card.ledger.get(f"{paid.payment.payment_id}.0").status.value == "CAPTURED"
        seen_by_b = await b.stub.GetPayment(
            pb.GetPaymentRequest(payment_id=paid.payment.payment_id), timeout=10)
        assert seen_by_b.payment == paid.payment
    finally:
        await sim_server.stop(None)


async def test_another_replicas_unfinished_work_is_taken_up_only_after_the_handoff(
        replicas) -> None:
    _, databases = replicas
    a, b = (PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases)
    live = _payment("live")
    live.received_at_us = clock.now_us()
    assert await a.insert_payment(live) is None
    old = _payment("old")
    old.received_at_us = clock.now_us() - (HANDOFF_AFTER_MS + 1_000) * 1_000
    assert await a.insert_payment(old) is None
    assert {p.payment_id for p in await a.list_processing_payments()} == {
        live.payment_id, old.payment_id}  # its own, whatever their age
    assert [p.payment_id for p in await b.list_processing_payments()] == [old.payment_id]

    paid = await _captured_payment(a)
    refund = _refund(paid.payment_id, "r-live", 100)
    refund.created_at_us = clock.now_us()
    assert await a.insert_refund(refund) is None
    assert [r.refund_id for r in await a.list_pending_refunds()] == [refund.refund_id]
    assert await b.list_pending_refunds() == []
    refund.status = refund.legs[0].status = RefundStatus.SUCCEEDED
    await a.save_refund_outcome(refund)
    assert await a.list_pending_refunds() == []
