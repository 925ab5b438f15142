"""`serve --workers 2` on one SQLite file (issue 17, point 4): the workers
keep between processes every rule PostgreSQL replicas keep.

A same-key Pay sent to both workers charges once (the second worker is told
to retry, as a replica is); a refund in flight on one worker is keyed and
reserved for the other; a worker's start never takes up a live worker's
payment (its recovery leaves it alone, and the payment ends as its own
worker decides), nor interrupts its batch; a fresh supervisor's first
worker takes up everything a crash left at once; WatchEvents on one worker sees a payment made on the
other long before its keep-alive. The servers are real processes on one
real file; the one channel simulator runs in this process, so its ledger is
the channel's whole record and its holds hold whichever worker charges.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as bpb
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.domain.model.limits import WATCH_KEEPALIVE_S
from paygrid_server.simulator.channel_simulator import ChannelSimulator
from tests.conftest import leg, money, pay_request
from tests.reliability.test_workers import (
    CONNECTIONS_TO_SEE_BOTH,
    _transactions,
    alive,
    card_simulator,
    workers_process,
)
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream
from tests.support.server_process import ServerProcess, wait_for
from tests.support.worker_log import (
    own_connection,
    ready_workers,
    served_by,
    start_of,
)


@dataclass
class TwoWorkers:
    supervisor: ServerProcess
    port: int
    card: ChannelSimulator  # the one channel, called by both workers
    connections: AsyncExitStack

    @property
    def log(self) -> Path:
        return self.supervisor.log

    async def by_worker(self) -> dict[int, grpc.aio.Channel]:
        """One open connection per worker (by pid), found by a probe Pay each."""
        workers = set(ready_workers(self.log))
        found: dict[int, grpc.aio.Channel] = {}
        for n in range(CONNECTIONS_TO_SEE_BOTH):
            channel = own_connection(f"127.0.0.1:{self.port}")
            key = f"probe-{n}"
            await pb_grpc.PaymentServiceStub(channel).Pay(pay_request(key), timeout=30)
            await wait_for(lambda: served_by(self.log, key) is not None, "its log line")
            worker = served_by(self.log, key)
            if worker in found:
                await channel.close()
                continue
            found[worker] = await self.connections.enter_async_context(channel)
            if set(found) == workers:
                return found
        raise AssertionError(f"only {set(found)} of {workers} served {CONNECTIONS_TO_SEE_BOTH}")

    async def payment_stubs(self) -> list[pb_grpc.PaymentServiceStub]:
        return [pb_grpc.PaymentServiceStub(c) for c in (await self.by_worker()).values()]

    async def kill_and_restart(self, pid: int) -> dict:
        """SIGKILLs worker `pid`; the server.started line of the one started again."""
        before = len(ready_workers(self.log))
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: len(ready_workers(self.log)) > before, "its restart")
        return await start_of(self.log, ready_workers(self.log)[before])

    def captured_once(self, payment: pb.Payment) -> bool:
        key = f"{payment.payment_id}.0"
        return [c.idempotency_key for c in self.card.ledger.captured()].count(key) == 1


@asynccontextmanager
async def two_workers(tmp_path: Path, database: Path | None = None, simulator=None,
                      **server: int) -> AsyncIterator[TwoWorkers]:
    """`simulator` (start_simulator's): one that outlives these workers."""
    sim_server, card, sim_port = simulator or await card_simulator()
    supervisor, port = workers_process(tmp_path, database or tmp_path / "paygrid.sqlite3",
                                       sim_port, **server)
    try:
        async with AsyncExitStack() as connections:
            await supervisor.start(port)
            await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
            yield TwoWorkers(supervisor, port, card, connections)
    finally:
        card.faults.release_charges()
        card.faults.thaw()
        supervisor.terminate()
        if simulator is None:
            await sim_server.stop(None)


async def test_a_same_key_pay_sent_to_both_workers_charges_once(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as rig:
        first, second = await rig.payment_stubs()
        rig.card.faults.hold_charges()
        call = first.Pay(pay_request("same-key"), timeout=60)
        await asyncio.wait_for(rig.card.faults.held(1), 60)
        with pytest.raises(grpc.aio.AioRpcError) as told:
            await second.Pay(pay_request("same-key"), timeout=30)
        # As between replicas: retry later, never a second payment or charge.
        assert told.value.code() == grpc.StatusCode.ABORTED, told.value
        rig.card.faults.release_charges()
        paid = (await call).payment
        assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED, paid
        again = (await second.Pay(pay_request("same-key"), timeout=30)).payment
        assert (again.payment_id, again.status) == (paid.payment_id, paid.status)
        assert rig.card.ledger.charge_requests[f"{paid.payment_id}.0"] == 1
        assert rig.captured_once(paid)


async def test_a_refund_held_on_one_worker_is_reserved_and_keyed_for_the_other(
        tmp_path: Path) -> None:
    """A full refund is at the channel (held there) from worker A: on worker
    B a retry with its key is told to wait (ABORTED), and another refund of
    even 1 minor unit exceeds what is left (its reservation is in the file).
    Once released: one refund at the channel, and B answers with A's."""
    async with two_workers(tmp_path) as rig:
        first, second = await rig.payment_stubs()
        paid = (await first.Pay(pay_request("to-refund", leg(amount_minor=1_000)))).payment

        def refund(key: str, amount_minor: int) -> pb.RefundPaymentRequest:
            return pb.RefundPaymentRequest(
                payment_id=paid.payment_id, idempotency_key=key,
                legs=[pb.RefundLeg(leg_index=0, amount=money("USD", amount_minor))])

        rig.card.faults.freeze()
        call = first.RefundPayment(refund("whole", 1_000), timeout=60)
        await asyncio.wait_for(rig.card.faults.frozen(calls=1), 60)  # the refund at the channel
        with pytest.raises(grpc.aio.AioRpcError) as told:
            await second.RefundPayment(refund("whole", 1_000), timeout=30)
        assert told.value.code() == grpc.StatusCode.ABORTED, told.value
        with pytest.raises(grpc.aio.AioRpcError) as exceeds:
            await second.RefundPayment(refund("one-more", 1), timeout=30)
        assert exceeds.value.code() == grpc.StatusCode.FAILED_PRECONDITION, exceeds.value
        rig.card.faults.thaw()
        refunded = (await call).refund
        assert refunded.status == pb.REFUND_STATUS_SUCCEEDED, refunded
        again = (await second.RefundPayment(refund("whole", 1_000), timeout=30)).refund
        assert (again.refund_id, again.status) == (refunded.refund_id, refunded.status)
        assert len(rig.card.ledger.refunds) == 1, rig.card.ledger.refunds


async def test_a_worker_s_start_never_takes_up_a_live_worker_s_payment(tmp_path: Path) -> None:
    """Worker A holds a payment mid-charge; worker B is SIGKILLed and started
    again, and its start's recovery (which takes up whatever is its to take)
    takes nothing: the payment is A's, A's run ends it, with one charge and
    no Void."""
    async with two_workers(tmp_path, recovery_interval_ms=100) as rig:
        by_worker = await rig.by_worker()
        driving, other = by_worker
        rig.card.faults.hold_charges()
        call = pb_grpc.PaymentServiceStub(by_worker[driving]).Pay(
            pay_request("held-on-a"), timeout=60)
        await asyncio.wait_for(rig.card.faults.held(1), 60)
        assert (await rig.kill_and_restart(other))["recovering_payments"] == 0
        assert rig.card.reversal_calls == {}, "nothing fenced meanwhile"
        rig.card.faults.release_charges()
        paid = (await call).payment
        assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED, paid
        await wait_for(lambda: served_by(rig.log, "held-on-a") is not None, "its log")
        assert served_by(rig.log, "held-on-a") == driving
        assert rig.captured_once(paid) and rig.card.reversal_calls == {}


async def test_a_worker_s_start_never_interrupts_a_live_worker_s_batch(tmp_path: Path) -> None:
    """A batch's stream is on worker A, its charges held at the channel;
    worker B is SIGKILLed and started again: B's start interrupts no batch
    (it cannot tell A's from a dead worker's), and A's batch completes, every
    item charged once."""
    async with two_workers(tmp_path) as rig:
        by_worker = await rig.by_worker()
        streaming, other = by_worker
        transactions = _transactions(20)
        rig.card.faults.hold_charges()
        call, outgoing = open_stream(batch_stub(by_worker[streaming]), timeout=120)
        for message in (header("live-batch", max_group_size=10), chunk(*transactions), None):
            await outgoing.put(message)
        await asyncio.wait_for(rig.card.faults.held(1), 60)
        started = await rig.kill_and_restart(other)
        assert started["interrupted_batches"] == 0, started
        rig.card.faults.release_charges()
        reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(t.reference for t in transactions)
        paid = sorted(c.payee for c in rig.card.ledger.captured()
                      if c.payee.startswith("employee_"))
        assert paid == sorted(t.payee for t in transactions), "each item once (probes aside)"


async def test_a_fresh_supervisor_s_first_worker_takes_up_a_crash_s_payments_at_once(
        tmp_path: Path) -> None:
    """The supervisor and both workers are SIGKILLed while a payment is held
    mid-charge; its charge lands. A new supervisor's first worker starts
    while nothing else lives on the file: it takes the payment up at once
    (not after the hand-off), and it ends SUCCEEDED with its one charge."""
    database = tmp_path / "paygrid.sqlite3"
    simulator = await card_simulator()  # the channel outlives both servers
    try:
        await _crash_then_start_again(tmp_path, database, simulator)
    finally:
        await simulator[0].stop(None)


async def _crash_then_start_again(tmp_path: Path, database: Path, simulator) -> None:
    async with two_workers(tmp_path, database, simulator) as crashed:
        workers = ready_workers(crashed.log)
        crashed.card.faults.hold_charges()
        async with own_connection(f"127.0.0.1:{crashed.port}") as channel:
            call = pb_grpc.PaymentServiceStub(channel).Pay(pay_request("crashed"), timeout=60)
            await asyncio.wait_for(crashed.card.faults.held(1), 60)
            for pid in (crashed.supervisor.process.pid, *workers):
                os.kill(pid, signal.SIGKILL)
            crashed.card.faults.release_charges()
            await crashed.card.finish_late_work()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        crashed.supervisor.process.wait(timeout=30)
        await wait_for(lambda: not any(alive(pid) for pid in workers), "the workers gone")
    (tmp_path / "again").mkdir()
    async with two_workers(tmp_path / "again", database, simulator) as rig:
        first = await start_of(rig.log, ready_workers(rig.log)[0])
        assert first["recovering_payments"] == 1, first
        async with own_connection(f"127.0.0.1:{rig.port}") as channel:
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
        assert rig.captured_once(paid)


async def test_watch_events_on_one_worker_sees_a_payment_made_on_the_other(
        tmp_path: Path) -> None:
    async with two_workers(tmp_path) as rig:
        watching, paying = (await rig.by_worker()).values()
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
