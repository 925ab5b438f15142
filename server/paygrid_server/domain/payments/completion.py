"""Decides a payment's final status from its legs and enforces its mode.

ALL_OR_NOTHING: when a leg fails (or stays unknown), every leg that may hold
money is reversed; the payment ends FAILED only once all of them are. A
reversal the channel could not confirm leaves the payment PROCESSING, and
the resolver calls this again until it can finish: it never ends half-paid.
"""

from __future__ import annotations

import asyncio

import structlog

from paygrid_server.domain.model import clock
from paygrid_server.domain.charging.settlement import ChargeSettlement, Reversal
from paygrid_server.domain.model.payment import (
    Failure,
    FailureReason,
    Leg,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.domain.model.redaction import mask_account
from paygrid_server.domain.ports.payment_store import PaymentStore

log = structlog.get_logger("paygrid.payments")


def _first_failure(payment: Payment) -> tuple[Leg, Failure] | None:
    for leg in payment.legs:
        if leg.status in (LegStatus.FAILED, LegStatus.UNKNOWN) and leg.failure:
            return leg, leg.failure
    return None


def leg_log_fields(leg: Leg) -> dict:
    """A leg as its payment's log line shows it. The legs ride on that one
    line rather than a line each: a line costs the event loop about 10 us
    (docs/performance.md, "Pay's event loop")."""
    return {"index": leg.index, "payee": mask_account(leg.request.payee),
            "channel": leg.channel, "status": leg.status.value, "attempts": leg.attempts,
            "failure": leg.failure.reason.value if leg.failure else None,
            "latency_ms": round(leg.latency_us / 1_000, 3)}


class PaymentCompletion:
    def __init__(self, store: PaymentStore, settlement: ChargeSettlement) -> None:
        self._store = store
        self._settlement = settlement

    async def complete(self, payment: Payment) -> None:
        """Sets and persists the payment's status (PROCESSING if it cannot
        finish yet)."""
        assert not payment.status.is_final, "a final payment is never reopened"
        failed = _first_failure(payment)
        # ALL_OR_NOTHING: the first cause sticks. Once the payment is failing,
        # every later pass reverses whatever still holds (or may hold) money,
        # including a leg a channel confirmed only after the decision.
        if failed and (payment.failure is None or payment.mode is PaymentMode.INDEPENDENT):
            leg, cause = failed
            payment.failure = Failure(cause.reason, f"leg {leg.index}: {cause.message}",
                                      cause.decline_code)
        if payment.mode is PaymentMode.ALL_OR_NOTHING and payment.failure is not None:
            to_reverse = [leg for leg in payment.legs
                          if leg.status in (LegStatus.SUCCEEDED, LegStatus.UNKNOWN)]
            await asyncio.gather(*(self._reverse(payment, leg, payment.failure)
                                   for leg in to_reverse))

        legs = payment.legs
        if all(leg.status is LegStatus.SUCCEEDED for leg in legs):
            status = PaymentStatus.SUCCEEDED
            payment.failure = None  # an earlier unknown leg turned out charged
        elif any(not leg.status.is_settled for leg in legs):
            status = PaymentStatus.PROCESSING
        elif payment.mode is PaymentMode.ALL_OR_NOTHING:
            # Settled but with a leg still charged: a reversal that failed.
            held = any(leg.status is LegStatus.SUCCEEDED for leg in legs)
            status = PaymentStatus.PROCESSING if held else PaymentStatus.FAILED
        elif any(leg.status is LegStatus.SUCCEEDED for leg in legs):
            status = PaymentStatus.PARTIALLY_SUCCEEDED
        else:
            status = PaymentStatus.FAILED
        payment.status = status
        if status.is_final:
            payment.completed_at_us = clock.now_us()
        # What this run made of the legs, taken before a stored outcome
        # from elsewhere may replace them.
        logged_legs = [leg_log_fields(leg) for leg in legs]
        if not await self._store.save_payment_outcome(payment):
            # Another replica's recovery finished it first: its outcome
            # stands, and this run answers with it.
            stored = await self._store.get_payment(payment.payment_id)
            assert stored is not None and stored.status.is_final
            for name in Payment.__slots__:
                setattr(payment, name, getattr(stored, name))
            log.info("payment.completed_elsewhere", status=stored.status.value,
                     legs=logged_legs)
            return
        log.info(
            "payment.completed" if status.is_final else "payment.unresolved",
            status=status.value, mode=payment.mode.value, legs=logged_legs,
            failure=payment.failure.reason.value if payment.failure else None,
            processing_ms=round((payment.completed_at_us - payment.received_at_us) / 1_000, 3)
            if payment.completed_at_us else None,
        )

    async def _reverse(self, payment: Payment, leg: Leg, cause: Failure) -> None:
        key = payment.channel_key(leg.index)
        channels = [leg.channel] if leg.status is LegStatus.SUCCEEDED else \
            await self._store.attempted_channels(payment.payment_id, leg.index)
        results = await asyncio.gather(*(
            self._settlement.reverse(name, key, leg.request.amount) for name in channels))
        if Reversal.NOT_DONE in results:
            return  # still holds money (or may): the resolver retries
        if Reversal.REVERSED in results:
            leg.status = LegStatus.VOIDED
            leg.failure = Failure(FailureReason.OTHER_LEG_FAILED,
                                  f"reversed because the payment failed ({cause.message})")
        else:
            leg.status = LegStatus.FAILED
            leg.failure = Failure(
                FailureReason.OUTCOME_UNKNOWN,
                f"channel {leg.channel!r} gave no outcome; the charge was voided, "
                "so nothing was charged")
