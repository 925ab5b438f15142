"""`serve --workers 2` on one SQLite file (issue 17, point 4): the workers
keep between processes every rule PostgreSQL replicas keep.

A same-key Pay sent to both workers charges once (the second worker is told
to retry, as a replica is); a refund in flight on one worker is keyed and
reserved for the other; a worker's start never takes up a live worker's
payment (its recovery leaves it alone, and the payment ends as its own
worker decides), nor interrupts its batch; a fresh supervisor's first worker takes up everything a
crash left at once; WatchEvents on one worker sees a payment made on the
other long before its keep-alive. The servers are real processes on one
real file; the one channel simulator runs in this process, so its ledger is
the channel's whole record and its holds hold whichever worker charges.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.domain.model.limits import WATCH_KEEPALIVE_S
from tests.conftest import leg, money, pay_request
from paygrid.v1 import batch_service_pb2 as bpb
from tests.reliability.test_workers import (
    CONNECTIONS_TO_SEE_BOTH,
    _transactions,
    alive,
    card_simulator,
    workers_process,
)
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream
from tests.support.server_process import ServerProcess, wait_for
from tests.support.worker_log import log_events, own_connection, ready_workers, served_by


async def both_serving(supervisor: ServerProcess, port: int) -> None:
    await supervisor.start(port)
    await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")


async def connections_to_each_worker(stack: AsyncExitStack, port: int,
                                     log: Path) -> dict[int, grpc.aio.Channel]:
    """One open connection per worker (by pid), found by a probe Pay each."""
    workers = set(ready_workers(log))
    found: dict[int, grpc.aio.Channel] = {}
    for n in range(CONNECTIONS_TO_SEE_BOTH):
        channel = own_connection(f"127.0.0.1:{port}")
        key = f"probe-{n}"
        await pb_grpc.PaymentServiceStub(channel).Pay(pay_request(key), timeout=30)
        await wait_for(lambda: served_by(log, key) is not None, "its log line")
        worker = served_by(log, key)
        if worker in found:
            await channel.close()
            continue
        found[worker] = await stack.enter_async_context(channel)
        if set(found) == workers:
            return found
    raise AssertionError(f"only {set(found)} of {workers} served {CONNECTIONS_TO_SEE_BOTH}")


async def start_of(log: Path, pid: int) -> dict:
    """Worker `pid`'s server.started line (what its start took up, interrupted)."""
    def lines() -> list[dict]:
        return [e for e in log_events(log, "server.started") if e.get("worker_pid") == pid]
    await wait_for(lambda: lines(), f"worker {pid}'s start")
    return lines()[0]


async def test_a_same_key_pay_sent_to_both_workers_charges_once(tmp_path: Path) -> None:
    sim_server, card, sim_port = await card_simulator()
    supervisor, port = workers_process(tmp_path, tmp_path / "paygrid.sqlite3", sim_port)
    try:
        await both_serving(supervisor, port)
        async with AsyncExitStack() as stack:
            first, second = (pb_grpc.PaymentServiceStub(c) for c in
                             (await connections_to_each_worker(stack, port, supervisor.log)).values())
            card.faults.hold_charges()
            call = first.Pay(pay_request("same-key"), timeout=60)
            await asyncio.wait_for(card.faults.held(1), 60)
            with pytest.raises(grpc.aio.AioRpcError) as told:
                await second.Pay(pay_request("same-key"), timeout=30)
            # As between replicas: retry later, never a second payment or charge.
            assert told.value.code() == grpc.StatusCode.ABORTED, told.value
            card.faults.release_charges()
            paid = (await call).payment
            assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED, paid
            again = (await second.Pay(pay_request("same-key"), timeout=30)).payment
            assert (again.payment_id, again.status) == (paid.payment_id, paid.status)
        key = f"{paid.payment_id}.0"
        assert card.ledger.charge_requests == {**card.ledger.charge_requests, key: 1}
        assert [c.idempotency_key for c in card.ledger.captured()].count(key) == 1
    finally:
        card.faults.release_charges()
        supervisor.terminate()
        await sim_server.stop(None)


async def test_a_refund_held_on_one_worker_is_reserved_and_keyed_for_the_other(
        tmp_path: Path) -> None:
    """A full refund is at the channel (held there) from worker A: on worker
    B a retry with its key is told to wait (ABORTED), and another refund of
    even 1 minor unit exceeds what is left (its reservation is in the file).
    Once released: one refund at the channel, and B answers with A's."""
    sim_server, card, sim_port = await card_simulator()
    supervisor, port = workers_process(tmp_path, tmp_path / "paygrid.sqlite3", sim_port)
    try:
        await both_serving(supervisor, port)
        async with AsyncExitStack() as stack:
            first, second = (pb_grpc.PaymentServiceStub(c) for c in
                             (await connections_to_each_worker(stack, port, supervisor.log)).values())
            paid = (await first.Pay(pay_request("to-refund", leg(amount_minor=1_000)))).payment

            def refund(key: str, amount_minor: int) -> pb.RefundPaymentRequest:
                return pb.RefundPaymentRequest(
                    payment_id=paid.payment_id, idempotency_key=key,
                    legs=[pb.RefundLeg(leg_index=0, amount=money("USD", amount_minor))])

            card.faults.freeze()
            call = first.RefundPayment(refund("whole", 1_000), timeout=60)
            await wait_for(lambda: card.faults.calls_frozen == 1, "the refund at the channel")
            with pytest.raises(grpc.aio.AioRpcError) as told:
                await second.RefundPayment(refund("whole", 1_000), timeout=30)
            assert told.value.code() == grpc.StatusCode.ABORTED, told.value
            with pytest.raises(grpc.aio.AioRpcError) as exceeds:
                await second.RefundPayment(refund("one-more", 1), timeout=30)
            assert exceeds.value.code() == grpc.StatusCode.FAILED_PRECONDITION, exceeds.value
            card.faults.thaw()
            refunded = (await call).refund
            assert refunded.status == pb.REFUND_STATUS_SUCCEEDED, refunded
            again = (await second.RefundPayment(refund("whole", 1_000), timeout=30)).refund
            assert (again.refund_id, again.status) == (refunded.refund_id, refunded.status)
        assert len(card.ledger.refunds) == 1, card.ledger.refunds
    finally:
        card.faults.thaw()
        supervisor.terminate()
        await sim_server.stop(None)


async def test_a_worker_s_start_never_takes_up_a_live_worker_s_payment(tmp_path: Path) -> None:
    """Worker A holds a payment mid-charge; worker B is SIGKILLed and started
    again, and its start's recovery (which takes up whatever is its to take)
    takes nothing: the payment is A's, A's run ends it, with one charge and
    no Void."""
    sim_server, card, sim_port = await card_simulator()
    supervisor, port = workers_process(tmp_path, tmp_path / "paygrid.sqlite3", sim_port,
                                       recovery_interval_ms=100)
    try:
        await both_serving(supervisor, port)
        async with AsyncExitStack() as stack:
            by_worker = await connections_to_each_worker(stack, port, supervisor.log)
            driving, other = by_worker
            card.faults.hold_charges()
            call = pb_grpc.PaymentServiceStub(by_worker[driving]).Pay(
                pay_request("held-on-a"), timeout=60)
            await asyncio.wait_for(card.faults.held(1), 60)
            os.kill(other, signal.SIGKILL)
            await wait_for(lambda: len(ready_workers(supervisor.log)) == 3, "B's restart")
            restarted = ready_workers(supervisor.log)[2]
            assert (await start_of(supervisor.log, restarted))["recovering_payments"] == 0
            assert card.reversal_calls == {}, "nothing fenced meanwhile"
            card.faults.release_charges()
            paid = (await call).payment
        assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED, paid
        await wait_for(lambda: served_by(supervisor.log, "held-on-a") is not None, "its log")
        assert served_by(supervisor.log, "held-on-a") == driving
        key = f"{paid.payment_id}.0"
        assert [c.idempotency_key for c in card.ledger.captured()].count(key) == 1
        assert key not in card.reversal_calls
    finally:
        card.faults.release_charges()
        supervisor.terminate()
        await sim_server.stop(None)


async def test_a_worker_s_start_never_interrupts_a_live_worker_s_batch(tmp_path: Path) -> None:
    """A batch's stream is on worker A, its charges held at the channel;
    worker B is SIGKILLed and started again: B's start interrupts no batch
    (it cannot tell A's from a dead worker's), and A's batch completes, every
    item charged once."""
    sim_server, card, sim_port = await card_simulator()
    supervisor, port = workers_process(tmp_path, tmp_path / "paygrid.sqlite3", sim_port)
    try:
        await both_serving(supervisor, port)
        async with AsyncExitStack() as stack:
            by_worker = await connections_to_each_worker(stack, port, supervisor.log)
            streaming, other = by_worker
            transactions = _transactions(20)
            card.faults.hold_charges()
            call, outgoing = open_stream(batch_stub(by_worker[streaming]), timeout=120)
            for message in (header("live-batch", max_group_size=10), chunk(*transactions), None):
                await outgoing.put(message)
            await asyncio.wait_for(card.faults.held(1), 60)
            os.kill(other, signal.SIGKILL)
            await wait_for(lambda: len(ready_workers(supervisor.log)) == 3, "B's restart")
            restarted = ready_workers(supervisor.log)[2]
            started = await start_of(supervisor.log, restarted)
            assert started["interrupted_batches"] == 0, started
            card.faults.release_charges()
            reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(t.reference for t in transactions)
        paid = sorted(c.payee for c in card.ledger.captured() if c.payee.startswith("employee_"))
        assert paid == sorted(t.payee for t in transactions), "each item once (probes aside)"
    finally:
        card.faults.release_charges()
        supervisor.terminate()
        await sim_server.stop(None)


async def test_a_fresh_supervisor_s_first_worker_takes_up_a_crash_s_payments_at_once(
        tmp_path: Path) -> None:
    """The supervisor and both workers are SIGKILLed while a payment is held
    mid-charge; its charge lands. A new supervisor's first worker starts
    while nothing else lives on the file: it takes the payment up at once
    (not after the hand-off), and it ends SUCCEEDED with its one charge."""
    sim_server, card, sim_port = await card_simulator()
    database = tmp_path / "paygrid.sqlite3"
    supervisor, port = workers_process(tmp_path, database, sim_port)
    try:
        await both_serving(supervisor, port)
        workers = ready_workers(supervisor.log)
        card.faults.hold_charges()
        async with own_connection(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.PaymentServiceStub(channel).Pay(pay_request("crashed"), timeout=60)
            await asyncio.wait_for(card.faults.held(1), 60)
            for pid in (supervisor.process.pid, *workers):
                os.kill(pid, signal.SIGKILL)
            card.faults.release_charges()
            await card.finish_late_work()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        supervisor.process.wait(timeout=30)
        await wait_for(lambda: not any(alive(pid) for pid in workers), "the workers gone")
        (tmp_path / "again").mkdir()
        supervisor, port = workers_process(tmp_path / "again", database, sim_port)
        await both_serving(supervisor, port)
        first = await start_of(supervisor.log, ready_workers(supervisor.log)[0])
        assert first["recovering_payments"] == 1, first
        async with own_connection(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)

            async def final() -> pb.Payment:
                while True:
                    try:
                        payment = (await stub.Pay(pay_request("crashed"), timeout=30)).payment
                        if payment.status != pb.PAYMENT_STATUS_PROCESSING:
                            return payment
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.ABORTED, error  # being settled
                    await asyncio.sleep(0.05)

            paid = await asyncio.wait_for(final(), 60)  # the hand-off would be 90 s
        assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED, paid
        key = f"{paid.payment_id}.0"
        assert [c.idempotency_key for c in card.ledger.captured()].count(key) == 1
    finally:
        card.faults.release_charges()
        supervisor.terminate()
        await sim_server.stop(None)



async def test_watch_events_on_one_worker_sees_a_payment_made_on_the_other(
        tmp_path: Path) -> None:
    sim_server, _, sim_port = await card_simulator()
    supervisor, port = workers_process(tmp_path, tmp_path / "paygrid.sqlite3", sim_port)
    try:
        await both_serving(supervisor, port)
        async with AsyncExitStack() as stack:
            watching, paying = (await connections_to_each_worker(
                stack, port, supervisor.log)).values()
            stream = ev_grpc.EventServiceStub(watching).WatchEvents(
                ev.WatchEventsRequest(start=ev.START_POSITION_LATEST))
            frames = stream.__aiter__()
            first = await frames.__anext__()
            assert not first.HasField("event")  # the position: following from now
            paid = (await pb_grpc.PaymentServiceStub(paying).Pay(pay_request("elsewhere"))).payment

            async def its_created_event() -> ev.Event:
                async for frame in frames:
                    if frame.HasField("event") and frame.event.aggregate_id == paid.payment_id:
                        return frame.event
                raise AssertionError("the stream ended")

            # Woken by the other worker's commit, not by the keep-alive's read.
            event = await asyncio.wait_for(its_created_event(), WATCH_KEEPALIVE_S / 3)
            assert event.type == "io.paygrid.payment.created.v1"
            stream.cancel()
    finally:
        supervisor.terminate()
        await sim_server.stop(None)
