"""Real-time payments: validate, persist, charge every leg concurrently, finish.

A payment's execution is shielded from its RPC: if the caller goes away or
its deadline passes, the payment still runs to a final, persisted state, and
a retry with the same key returns it. A caller that asked to wait only until
the payment is accepted (PayWait.ACCEPTED) is answered once the payment is
stored, from the same execution, which runs on exactly as for a caller that
went away: in flight (shutdown drains it), resumed by recovery after a crash.
"""

from __future__ import annotations

import asyncio
import copy

import structlog

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.model.errors import (
    AcceptedPaymentsAtLimit,
    DeadlineTooShort,
    IdempotencyConflict,
    NotFound,
    RequestInProgress,
)
from paygrid_server.domain.payments.leg_dispatch import LegDispatcher
from paygrid_server.domain.model.payment import Leg, Payment
from paygrid_server.domain.model.time_ordered_ids import uuid7_hex
from paygrid_server.domain.payments.completion import PaymentCompletion
from paygrid_server.domain.model.request_validation import (
    PayInput,
    PayWait,
    Violations,
    check_text,
    validate_pay,
)
from paygrid_server.domain.charging.routing import Router
from paygrid_server.domain.in_flight import InFlight, pass_outcome
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.ports.payment_store import PageCursor, PaymentStore

RETRY_IN_PROGRESS_AFTER_MS = 100
RETRY_AT_ACCEPTED_LIMIT_AFTER_MS = 200  # as a shed call (transport/load_shedding.py)

log = structlog.get_logger("paygrid.payments")


def refuse_too_short_deadline(caller_remaining_ms: float | None) -> None:
    """Raises DeadlineTooShort for a call that could not be answered in
    time: it is refused before anything is stored, rather than carried out
    for a caller who is told DEADLINE_EXCEEDED (and may try elsewhere)."""
    if caller_remaining_ms is not None and caller_remaining_ms < limits.MIN_CALL_DEADLINE_MS:
        raise DeadlineTooShort(int(max(caller_remaining_ms, 0)), limits.MIN_CALL_DEADLINE_MS)


def payment_budget_ms(caller_remaining_ms: float | None) -> float:
    """How long the legs may take, from what the caller's deadline leaves."""
    if caller_remaining_ms is None:
        return limits.DEFAULT_PAYMENT_BUDGET_MS
    refuse_too_short_deadline(caller_remaining_ms)
    reserve_ms = max(limits.RESPONSE_RESERVE_MS,
                     caller_remaining_ms * limits.RESPONSE_RESERVE_PERCENT / 100)
    return min(caller_remaining_ms - reserve_ms, limits.MAX_PAYMENT_BUDGET_MS)


def legs_budget_ms(wait: PayWait, caller_remaining_ms: float | None) -> float:
    """A caller waiting only for acceptance is gone before the legs end:
    they get the budget of a call without a deadline, not what is left of
    its deadline (which must still suffice to store the payment and answer)."""
    if wait is PayWait.ACCEPTED:
        refuse_too_short_deadline(caller_remaining_ms)
        return limits.DEFAULT_PAYMENT_BUDGET_MS
    return payment_budget_ms(caller_remaining_ms)


def answer_on_acceptance(execution: asyncio.Task, accepted: asyncio.Future) -> None:
    """`accepted` gets the execution's outcome if it ends before accepting
    (a replay, a conflict, a storage error). One that fails after has no
    caller left to tell: it is logged, and the payment, still PROCESSING,
    is the resolver's."""
    def ended(task: asyncio.Task) -> None:
        if accepted.done():
            if not task.cancelled() and task.exception() is not None:
                log.error("payment.execution_failed", exc_info=task.exception())
        else:
            pass_outcome(task, accepted)
    execution.add_done_callback(ended)


def owned_payment(tenant_id: str, payment_id: str, payment: Payment | None) -> Payment:
    """Another tenant's payment is NOT_FOUND, exactly like a missing one, so
    a caller learns nothing about ids it does not own."""
    if payment is None or payment.tenant_id != tenant_id:
        raise NotFound("payment", payment_id)
    return payment


def bind_payment_ids(payment: Payment) -> None:
    """Every log event of this task (and the leg tasks it starts) carries
    the payment's ids; bound once here, never passed by hand."""
    structlog.contextvars.bind_contextvars(payment_id=payment.payment_id,
                                           idempotency_key=payment.idempotency_key)


class PaymentService:
    def __init__(self, store: PaymentStore, router: Router, dispatcher: LegDispatcher,
                 completion: PaymentCompletion, in_flight: InFlight,
                 max_accepted_running: int, payments_first: PaymentsFirst) -> None:
        self._store = store
        self._payments_first = payments_first
        self._router = router
        self._dispatcher = dispatcher
        self._completion = completion
        self._in_flight = in_flight
        # Accepted executions outlive their calls, so the calls limit does
        # not bound them: without this a client could start any number.
        self._max_accepted_running = max_accepted_running
        self._accepted_running = 0

    async def pay(self, tenant_id: str, request: PayInput,
                  caller_remaining_ms: float | None) -> Payment:
        valid = validate_pay(request, self._router.check)
        wait = request.waits_for
        deadline_ms = clock.monotonic_ms() + legs_budget_ms(wait, caller_remaining_ms)
        if wait is PayWait.ACCEPTED and self._accepted_running >= self._max_accepted_running:
            raise AcceptedPaymentsAtLimit(self._max_accepted_running,
                                          RETRY_AT_ACCEPTED_LIMIT_AFTER_MS)
        payment = Payment(
            payment_id=f"pay_{uuid7_hex()}",  # time-ordered: see time_ordered_ids
            tenant_id=tenant_id,
            idempotency_key=valid.idempotency_key,
            fingerprint=valid.fingerprint(),
            payer=valid.payer,
            mode=valid.mode,
            legs=[Leg(i, leg, first_channel=self._router.candidates(leg)[0].name)
                  for i, leg in enumerate(valid.legs)],
            metadata=valid.metadata,
            received_at_us=clock.now_us(),
        )
        # Registered as in flight before its row exists, so the resolver can
        # never mistake a payment that is just starting for an abandoned one.
        # The caller awaits an answer that its going away does not cancel.
        self._payments_first.payment_started()
        try:
            if wait is not PayWait.ACCEPTED:
                return await self._in_flight.answer(
                    payment.payment_id, self._start(payment, deadline_ms, wait, None))
            accepted = asyncio.get_running_loop().create_future()
            task = self._in_flight.run(payment.payment_id,
                                       self._start(payment, deadline_ms, wait, accepted))
            self._accepted_running += 1
            task.add_done_callback(self._accepted_ended)
            answer_on_acceptance(task, accepted)
            return await asyncio.shield(accepted)
        finally:
            self._payments_first.payment_ended()

    def _accepted_ended(self, _: asyncio.Task) -> None:
        self._accepted_running -= 1

    async def _start(self, payment: Payment, deadline_ms: float, wait: PayWait,
                     accepted: asyncio.Future | None) -> Payment:
        existing = await self._store.insert_payment(payment)
        if existing is not None:
            return await self._replay(existing, payment.fingerprint, wait)
        if accepted is not None:
            # A copy: the execution goes on changing `payment` while the
            # answer is being encoded.
            accepted.set_result(copy.deepcopy(payment))
        return await self._execute(payment, deadline_ms)

    async def _replay(self, existing: Payment, fingerprint: str, wait: PayWait) -> Payment:
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(existing.idempotency_key)
        if wait is PayWait.ACCEPTED:
            # Accepted already: the payment as stored now, final or not.
            return await self._store.get_payment(existing.payment_id) or existing
        if existing.payment_id in self._in_flight:
            raise RequestInProgress(existing.idempotency_key, RETRY_IN_PROGRESS_AFTER_MS)
        if not existing.status.is_final:
            # Read while its execution was still running, which has ended
            # since: that snapshot is stale (PENDING legs), read it again.
            existing = await self._store.get_payment(existing.payment_id) or existing
            # Past the hand-off a resolver takes an abandoned one up, and a
            # retry gets it as it stands (PROCESSING).
            if self._store.payment_may_be_running_elsewhere(existing):
                raise RequestInProgress(existing.idempotency_key, RETRY_IN_PROGRESS_AFTER_MS)
        return existing

    async def _execute(self, payment: Payment, deadline_ms: float) -> Payment:
        bind_payment_ids(payment)
        if len(payment.legs) == 1:  # no task to spare for a single leg
            await self._dispatcher.dispatch(payment, payment.legs[0], deadline_ms)
        else:
            await asyncio.gather(*(
                self._dispatcher.dispatch(payment, leg, deadline_ms) for leg in payment.legs))
        await self._completion.complete(payment)
        return payment

    async def get(self, tenant_id: str, payment_id: str) -> Payment:
        v = Violations()
        check_text(v, "payment_id", payment_id, limits.PAYMENT_ID_MAX_CHARS, required=True)
        v.raise_if_any()
        return owned_payment(tenant_id, payment_id, await self._store.get_payment(payment_id))

    async def list(self, tenant_id: str, page_size: int,
                   after: PageCursor | None) -> tuple[list[Payment], PageCursor | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        if page_size < 0:
            v = Violations()
            v.add("page_size", f"must be 0 (default) or positive, got {page_size}")
            v.raise_if_any()
        if page_size == 0:
            page_size = limits.LIST_PAGE_SIZE_DEFAULT
        page_size = min(page_size, limits.LIST_PAGE_SIZE_MAX)
        rows = await self._store.list_payments(tenant_id, page_size + 1, after)
        page = rows[:page_size]
        more = len(rows) > page_size
        cursor = PageCursor(page[-1].received_at_us, page[-1].payment_id) if more else None
        return page, cursor
