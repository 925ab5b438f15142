"""A payment channel as a real gRPC service, for development and tests.

Behaviour is steered by test values in the payee id, like Stripe's test
cards (payee_test_values.py, docs/operations/simulator.md), plus
configurable Charge processing latency (fixed + jitter; status calls
answer at once) and a random transient failure rate on Charge. `faults`
(channel_faults.py) injects latency spikes, error bursts, hangs and failing
Void/Refund calls at run time (a delayed charge is booked by
late_charges.py); `behaviour` may be replaced at run time too (it is read
on every call).

ChargeBatch takes the latency and the failure rate once per call, like one
Charge, then makes each charge as Charge would. In a bulk call the test
values act on the whole call: a flaky_ key fails it UNAVAILABLE before
anything is charged; at a timeout_ charge processing stops (the charges
before it stand) and the call never answers; with a hang_after_charge_
charge everything is charged, then the answer never comes. `bulk_charge`
off makes ChargeBatch answer UNIMPLEMENTED, like a channel without it.

The servicer counts charges in progress (a bulk call counts each of its
charges), so tests can see that legs really run concurrently, and the
Charge and ChargeBatch calls it was sent. Stopping its gRPC server cancels
calls in progress; a restart with the same ledger (start_simulator's
`ledger`) is the channel coming back with its books intact.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable

import grpc

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid.channel.v1 import payment_channel_pb2_grpc as pb_grpc
from paygrid_server.config_model import SimulatorBehaviour  # noqa: F401 - also imported from here
from paygrid_server.domain.model import clock
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import MAX_CHARGES_PER_BATCH_CALL
from paygrid_server.simulator.channel_faults import ChannelFaults, ChargeFault
from paygrid_server.simulator.channel_ledger import (
    ChannelLedger,
    LedgerNotFound,
    LedgerRefusal,
    SimulatedCharge,
)
from paygrid_server.simulator.charge_messages import charge_message, charge_response
from paygrid_server.simulator.late_charges import LateCharges
from paygrid_server.simulator.payee_test_values import (
    OnceOnlyFailures,
    answers_at_once,
    decline_code,
    hangs_after_charge,
    never_answers,
)

NEVER_S = 3_600.0
LIST_CHARGES_MAX_PAGE = 1_000


class ChannelSimulator(pb_grpc.PaymentChannelServicer):
    def __init__(self, ledger: ChannelLedger, behaviour: SimulatorBehaviour) -> None:
        self.ledger = ledger
        self.behaviour = behaviour
        self._random = random.Random(behaviour.seed)
        self._once_only = OnceOnlyFailures()
        self.faults = ChannelFaults()
        # Void and Refund calls received, by the charge key they name.
        self.reversal_calls: dict[str, int] = {}
        self._late_charges = LateCharges()
        self.charges_in_progress = 0
        self.peak_charges_in_progress = 0
        # Set (and dropped) on the first change of the counters or the
        # ledger after a test began waiting on it (wait_until), instead of
        # polling by the clock. None while nobody waits: no Event per call.
        self._changed: asyncio.Event | None = None
        # Calls received, processed or not: bulk calls save round trips.
        self.charge_calls = 0
        self.charge_batch_calls = 0
        # Off (None) unless a test sets a list: the W3C traceparent of each
        # call, to check that paygrid passes its trace on.
        self.received_traceparents: list[str] | None = None

    def _note_traceparent(self, context: grpc.aio.ServicerContext) -> None:
        if self.received_traceparents is not None:
            self.received_traceparents += [value for name, value in
                                           context.invocation_metadata() or ()
                                           if name == "traceparent"]

    async def _processing_delay(self) -> None:
        delay_ms = self.behaviour.latency_ms + self._random.uniform(0, self.behaviour.jitter_ms)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1_000)

    def _started(self, charges: int) -> None:
        self.charges_in_progress += charges
        self.peak_charges_in_progress = max(self.peak_charges_in_progress,
                                            self.charges_in_progress)
        self._note_change()

    def _ended(self, charges: int) -> None:
        self.charges_in_progress -= charges
        self._note_change()

    def _note_change(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, condition: Callable[[], bool], what: str,
                         timeout_s: float = 60) -> None:
        """Returns once `condition()` (on calls in progress or the ledger)
        holds, checked at each change. The timeout only bounds a test whose
        condition never comes: it is an outcome's, never a moment's."""
        async def changes() -> None:
            while not condition():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()
        try:
            await asyncio.wait_for(changes(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def Charge(self, request: pb.ChargeRequest, context: grpc.aio.ServicerContext):
        answer = self.charge_at_once(request)
        if answer is not None:
            return answer
        self._note_traceparent(context)
        await self.faults.until_thawed()
        self.charge_calls += 1
        self._started(1)
        try:
            return await self._charge(request, context)
        finally:
            self._ended(1)

    def charge_at_once(self, request: pb.ChargeRequest) -> pb.ChargeResponse | None:
        """Charge's answer when nothing can make the call wait or fail: no
        fault switched on, no latency, jitter or failure rate, no test value
        that hangs or fails (a decline_ payee is answered), no traceparents
        being noted. None otherwise: Charge's full path decides. A plain
        function, so a caller in this process needs no deadline for it
        (in_process_channel.py): the simulator at rest costs little beside
        what it simulates."""
        behaviour = self.behaviour
        if (behaviour.latency_ms or behaviour.jitter_ms or behaviour.failure_rate
                or not self.faults.at_rest or self.received_traceparents is not None
                or not answers_at_once(request.payee)):
            return None
        self.charge_calls += 1
        self._started(1)
        try:
            return charge_response(self._book(request))
        finally:
            self._ended(1)

    async def _charge(self, request: pb.ChargeRequest, context: grpc.aio.ServicerContext):
        fault = await self._fault_for_charge_call(context)
        await self._processing_delay()
        payee = request.payee
        if self._random.random() < self.behaviour.failure_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated transient failure")
        if never_answers(payee):
            await asyncio.sleep(NEVER_S)
        if self._fails_flaky(request):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated flaky channel")
        record = await self._late_charges.book(fault, lambda: self._book(request), context)
        if hangs_after_charge(payee):
            await asyncio.sleep(NEVER_S)
        return charge_response(record)

    async def ChargeBatch(self, request: pb.ChargeBatchRequest,
                          context: grpc.aio.ServicerContext):
        self._note_traceparent(context)
        await self.faults.until_thawed()
        self.charge_batch_calls += 1
        if not self.behaviour.bulk_charge:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        count = len(request.charges)
        if not 1 <= count <= MAX_CHARGES_PER_BATCH_CALL:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{count} charges; send 1 to {MAX_CHARGES_PER_BATCH_CALL}")
        self._started(count)
        try:
            return await self._charge_batch(request, context)
        finally:
            self._ended(count)

    async def _charge_batch(self, request: pb.ChargeBatchRequest,
                            context: grpc.aio.ServicerContext):
        fault = await self._fault_for_charge_call(context)
        await self._processing_delay()  # one processing time for the whole file
        if self._random.random() < self.behaviour.failure_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated transient failure")
        # Every flaky key is noted before aborting, so one retry of the call
        # goes through, as one retry of each Charge would.
        flaky = [charge for charge in request.charges if self._fails_flaky(charge)]
        if flaky:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated flaky channel")
        records = await self._late_charges.book(
            fault, lambda: self._book_until_timeout(request), context)
        if len(records) < len(request.charges):
            await asyncio.sleep(NEVER_S)  # stopped at a timeout_ charge
        if any(hangs_after_charge(charge.payee) for charge in request.charges):
            await asyncio.sleep(NEVER_S)
        return pb.ChargeBatchResponse(charges=records)

    def _book_until_timeout(self, request: pb.ChargeBatchRequest) -> list[pb.Charge]:
        records = []
        for charge in request.charges:
            if never_answers(charge.payee):
                break
            records.append(charge_message(self._book(charge)))
        return records

    async def _fault_for_charge_call(self, context: grpc.aio.ServicerContext) -> ChargeFault:
        fault = self.faults.take_charge_fault()
        if fault.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated outage (injected fault)")
        return fault

    async def finish_late_work(self) -> None:
        """Waits until every charge a fault delayed has landed (or been
        refused by its fence); held charges must have been released."""
        await self._late_charges.finish()

    async def _maybe_fail_reversal(self, charge_key: str,
                                   context: grpc.aio.ServicerContext) -> None:
        self.reversal_calls[charge_key] = self.reversal_calls.get(charge_key, 0) + 1
        charge = self.ledger.charges.get(charge_key)
        if self.faults.take_reversal_failure() or self._once_only.fails_reversal_once(
                charge_key, charge.payee if charge is not None else None):
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "simulated failure of a void or refund (nothing done)")

    def _fails_flaky(self, request: pb.ChargeRequest) -> bool:
        return self._once_only.fails_flaky(request.payee, request.idempotency_key)

    def _book(self, request: pb.ChargeRequest) -> SimulatedCharge:
        """The ledger's outcome for one charge request: declined by a
        decline_ payee, else captured; a replayed or fenced key keeps its own."""
        record = self.ledger.charge(
            request.idempotency_key, request.payer, request.payee,
            Money(request.amount.currency, request.amount.amount_minor), clock.now_us(),
            decline_code=decline_code(request.payee))
        self._note_change()
        return record

    async def GetCharge(self, request: pb.GetChargeRequest, context: grpc.aio.ServicerContext):
        self._note_traceparent(context)
        await self.faults.until_thawed()
        try:
            return pb.GetChargeResponse(charge=charge_message(self.ledger.get(request.idempotency_key)))
        except LedgerNotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))

    async def ListCharges(self, request: pb.ListChargesRequest,
                          context: grpc.aio.ServicerContext):
        if request.page_size > LIST_CHARGES_MAX_PAGE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"page_size {request.page_size}; at most {LIST_CHARGES_MAX_PAGE}")
        page_size = request.page_size or LIST_CHARGES_MAX_PAGE
        charges = list(self.ledger.charges.values())  # a snapshot: charging goes on meanwhile
        for start in range(0, len(charges), page_size):
            yield pb.ListChargesResponse(
                charges=[charge_message(c) for c in charges[start:start + page_size]])

    async def Void(self, request: pb.VoidRequest, context: grpc.aio.ServicerContext):
        self._note_traceparent(context)
        await self.faults.until_thawed()
        await self._maybe_fail_reversal(request.idempotency_key, context)
        try:
            record = self.ledger.void(request.idempotency_key, clock.now_us())
        except LedgerRefusal as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        self._note_change()
        return pb.VoidResponse(charge=charge_message(record))

    async def Refund(self, request: pb.RefundRequest, context: grpc.aio.ServicerContext):
        self._note_traceparent(context)
        await self.faults.until_thawed()
        await self._maybe_fail_reversal(request.charge_idempotency_key, context)
        try:
            refund_id = self.ledger.refund(
                request.idempotency_key, request.charge_idempotency_key,
                Money(request.amount.currency, request.amount.amount_minor))
            record = self.ledger.get(request.charge_idempotency_key)
        except LedgerNotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except LedgerRefusal as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        self._note_change()
        return pb.RefundResponse(refund_id=refund_id, charge=charge_message(record))


async def start_simulator(name: str, behaviour: SimulatorBehaviour, listen: str = "127.0.0.1:0",
                          ledger: ChannelLedger | None = None,
                          credentials: grpc.ServerCredentials | None = None,
                          ) -> tuple[grpc.aio.Server, ChannelSimulator, int]:
    """Starts a simulator server; returns it, its servicer and its bound port.
    Passing the ledger of a stopped simulator restarts that channel."""
    server = grpc.aio.server()
    simulator = ChannelSimulator(ledger or ChannelLedger(name), behaviour)
    pb_grpc.add_PaymentChannelServicer_to_server(simulator, server)
    port = (server.add_insecure_port(listen) if credentials is None
            else server.add_secure_port(listen, credentials))
    assert port, f"could not bind the {name} simulator to {listen}"
    await server.start()
    return server, simulator, port
