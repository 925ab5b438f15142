"""Refunds: full or partial, per leg, never more than was captured.

The amount is reserved on the leg in the same transaction that records the
refund, so concurrent refunds cannot together exceed the capture; a channel
that refuses releases the reservation.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Mapping

import structlog

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.charging.retries import retry_settlement_call
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.errors import (
    IdempotencyConflict,
    PreconditionFailed,
    RequestInProgress,
)
from paygrid_server.domain.model.payment import Failure, FailureReason, LegStatus, Payment, PaymentStatus
from paygrid_server.domain.in_flight import InFlight
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.payments.payment_service import (
    RETRY_IN_PROGRESS_AFTER_MS,
    owned_payment,
    refuse_too_short_deadline,
)
from paygrid_server.domain.model.refund import Refund, RefundLeg, RefundLegRequest, RefundRequest, RefundStatus
from paygrid_server.domain.model.request_validation import (
    MoneyInput,
    Violations,
    check_idempotency_key,
    check_money,
    check_text,
)
from paygrid_server.domain.ports.payment_channel import ChannelRefused, PaymentChannel
from paygrid_server.domain.ports.payment_store import PaymentStore, RefundExceedsRefundable

log = structlog.get_logger("paygrid.refunds")


@dataclass(frozen=True, slots=True)
class RefundLegInput:
    leg_index: int
    amount: MoneyInput | None


@dataclass(frozen=True, slots=True)
class RefundInput:
    payment_id: str
    idempotency_key: str
    legs: list[RefundLegInput]
    reason: str


def validate_refund(request: RefundInput) -> RefundRequest:
    v = Violations()
    check_text(v, "payment_id", request.payment_id, limits.PAYMENT_ID_MAX_CHARS, required=True)
    check_idempotency_key(v, "idempotency_key", request.idempotency_key)
    check_text(v, "reason", request.reason, limits.REFERENCE_MAX_CHARS, required=False)
    if len(request.legs) > limits.MAX_LEGS_PER_PAYMENT:
        v.add("legs", f"{len(request.legs)} legs; a payment has at most {limits.MAX_LEGS_PER_PAYMENT}")
    legs = []
    seen: set[int] = set()
    for i, leg in enumerate(request.legs[: limits.MAX_LEGS_PER_PAYMENT]):
        if leg.leg_index in seen:
            v.add(f"legs[{i}].leg_index", f"leg {leg.leg_index} is listed twice")
        seen.add(leg.leg_index)
        amount = None
        if leg.amount is not None:
            amount = check_money(v, f"legs[{i}].amount", leg.amount)
        legs.append(RefundLegRequest(leg.leg_index, amount))
    v.raise_if_any()
    return RefundRequest(request.payment_id, request.idempotency_key, tuple(legs), request.reason)


class RefundService:
    def __init__(self, store: PaymentStore, channels: Mapping[str, PaymentChannel],
                 in_flight: InFlight, payments_first: PaymentsFirst) -> None:
        self._store = store
        self._channels = channels
        self._in_flight = in_flight
        # A refund's caller waits for money to move as a Pay's does, so
        # batch steps give way to it the same (domain/payments_first.py).
        self._payments_first = payments_first

    async def refund(self, tenant_id: str, request_input: RefundInput,
                     caller_remaining_ms: float | None = None) -> tuple[Refund, Payment]:
        """`caller_remaining_ms`: what the call's deadline leaves (None: no
        deadline). Too little is refused before anything is stored, as for Pay."""
        request = validate_refund(request_input)
        refuse_too_short_deadline(caller_remaining_ms)
        self._payments_first.payment_started()
        try:
            return await self._refund(tenant_id, request)
        finally:
            self._payments_first.payment_ended()

    async def _refund(self, tenant_id: str, request: RefundRequest) -> tuple[Refund, Payment]:
        payment = owned_payment(tenant_id, request.payment_id,
                                await self._store.get_payment(request.payment_id))
        fingerprint = request.fingerprint()
        existing = await self._store.get_refund_by_key(payment.payment_id, request.idempotency_key)
        if existing is None:
            refund = self._plan(payment, request, fingerprint)
            # In flight before its row exists: the resolver never takes it over.
            task = self._in_flight.run(refund.refund_id, self._start(refund, payment))
            existing = await asyncio.shield(task)
            if existing is None:
                return refund, await self._store.get_payment(payment.payment_id)
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(request.idempotency_key)
        if existing.refund_id in self._in_flight:
            raise RequestInProgress(request.idempotency_key, RETRY_IN_PROGRESS_AFTER_MS)
        # Both may have been read while the refund was still executing, which
        # has ended since: read them again rather than answer a stale PENDING.
        if existing.status is RefundStatus.PENDING:
            existing = await self._store.get_refund_by_key(
                payment.payment_id, request.idempotency_key) or existing
            if self._store.refund_may_be_running_elsewhere(existing):
                raise RequestInProgress(request.idempotency_key, RETRY_IN_PROGRESS_AFTER_MS)
        return existing, await self._store.get_payment(payment.payment_id) or payment

    async def _start(self, refund: Refund, payment: Payment) -> Refund | None:
        """Stores and executes the refund; the refund holding the key if taken."""
        try:
            existing = await self._store.insert_refund(refund)
        except RefundExceedsRefundable as error:
            raise PreconditionFailed(f"legs[{error.leg_index}]", "REFUND_EXCEEDS_CAPTURED",
                                     str(error)) from error
        if existing is None:
            await self._execute(refund, payment)
        return existing

    def _plan(self, payment: Payment, request: RefundRequest, fingerprint: str) -> Refund:
        if payment.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_SUCCEEDED):
            raise PreconditionFailed(
                "payment_id", "PAYMENT_NOT_CAPTURED",
                f"payment is {payment.status.value}; only a captured payment can be refunded")
        wanted = request.legs or tuple(
            RefundLegRequest(leg.index, None) for leg in payment.legs if leg.refundable_minor > 0)
        if not wanted:
            raise PreconditionFailed("payment_id", "NOTHING_TO_REFUND",
                                     "every captured leg is already fully refunded")
        v = Violations()
        legs: list[RefundLeg] = []
        for i, item in enumerate(wanted):
            if item.leg_index >= len(payment.legs):
                v.add(f"legs[{i}].leg_index",
                      f"payment has {len(payment.legs)} legs; no leg {item.leg_index}")
                continue
            leg = payment.legs[item.leg_index]
            if leg.status is not LegStatus.SUCCEEDED:
                raise PreconditionFailed(f"legs[{i}].leg_index", "LEG_NOT_CAPTURED",
                                         f"leg {leg.index} is {leg.status.value}, not captured")
            amount = item.amount or Money(leg.request.amount.currency, leg.refundable_minor)
            if amount.currency != leg.request.amount.currency:
                v.add(f"legs[{i}].amount.currency",
                      f"leg {leg.index} was paid in {leg.request.amount.currency}, not {amount.currency}")
                continue
            if amount.amount_minor <= 0:
                raise PreconditionFailed(f"legs[{i}]", "NOTHING_TO_REFUND",
                                         f"leg {leg.index} is already fully refunded")
            legs.append(RefundLeg(leg.index, amount, leg.channel))
        v.raise_if_any()
        return Refund(
            refund_id=f"ref_{uuid.uuid4().hex}", payment_id=payment.payment_id,
            idempotency_key=request.idempotency_key, fingerprint=fingerprint,
            reason=request.reason, legs=legs, created_at_us=clock.now_us())

    async def _execute(self, refund: Refund, payment: Payment) -> None:
        structlog.contextvars.bind_contextvars(
            refund_id=refund.refund_id, payment_id=refund.payment_id,
            idempotency_key=refund.idempotency_key)
        await asyncio.gather(*(self._refund_leg(refund, leg, payment.channel_key(leg.leg_index))
                               for leg in refund.legs if leg.status is RefundStatus.PENDING))
        refund.settle_status()
        await self._store.save_refund_outcome(refund)
        log.info("refund.completed", status=refund.status.value,
                 legs=len(refund.legs))

    async def _refund_leg(self, refund: Refund, leg: RefundLeg, charge_key: str) -> None:
        channel = self._channels[leg.channel]

        async def send() -> str:
            return await channel.refund(refund.channel_key(leg.leg_index), charge_key, leg.amount,
                                        limits.SETTLEMENT_CALL_TIMEOUT_MS)

        try:
            reference = await retry_settlement_call(send, "refund.retry", leg_index=leg.leg_index)
        except ChannelRefused as error:
            leg.status = RefundStatus.FAILED
            leg.failure = Failure(FailureReason.CHANNEL_REJECTED, str(error))
            return
        if reference is None:
            return  # still PENDING: the resolver retries with the same key later
        leg.status = RefundStatus.SUCCEEDED
        leg.channel_reference = reference

    async def resume_pending(self) -> None:
        for refund in await self._store.list_pending_refunds():
            if refund.refund_id in self._in_flight:
                continue
            payment = await self._store.get_payment(refund.payment_id)
            assert payment is not None, "a refund always has its payment"
            await self._in_flight.run(refund.refund_id, self._execute(refund, payment))
