"""Finishes payments and refunds that no live call is driving any more.

At start-up this resolves whatever a crash left PROCESSING; afterwards it
runs on a schedule for legs whose channel has not confirmed an outcome. It
asks each channel that was sent a Charge (GetCharge by our key), so the
answer is known, never guessed. The leg's last channel, when it has no
charge, is sent the Charge again under the same key (a charge made
meanwhile is replayed, not repeated): a payment whose charges were all made
ends SUCCEEDED. Keys are fenced (Void) where the channel answers nothing,
on channels the leg had failed over from, and where the charge must not
stand: an ALL_OR_NOTHING payment that is failing anyway.
"""

from __future__ import annotations

import asyncio

import structlog

from paygrid_server.domain.channel_charge import ChargeOrder
from paygrid_server.domain.charge_settlement import ChargeSettlement
from paygrid_server.domain.leg_dispatch import apply_charge_record
from paygrid_server.domain.payment import (
    Failure,
    FailureReason,
    Leg,
    LegStatus,
    Payment,
    PaymentMode,
)
from paygrid_server.domain.payment_completion import PaymentCompletion
from paygrid_server.domain.payment_service import InFlight, bind_payment_ids
from paygrid_server.domain.refund_service import RefundService
from paygrid_server.ports.payment_channel import ChargeStatus
from paygrid_server.ports.payment_store import PaymentStore

log = structlog.get_logger("paygrid.recovery")


class PaymentRecovery:
    def __init__(self, store: PaymentStore, settlement: ChargeSettlement,
                 completion: PaymentCompletion, refunds: RefundService,
                 in_flight: InFlight) -> None:
        self._store = store
        self._settlement = settlement
        self._completion = completion
        self._refunds = refunds
        self._in_flight = in_flight

    async def resolve_all(self) -> int:
        """One pass over every unfinished payment and refund nobody drives.
        Returns how many payments it looked at."""
        payments = [p for p in await self._store.list_processing_payments()
                    if p.payment_id not in self._in_flight]
        for payment in payments:
            await self._in_flight.run(payment.payment_id, self._resolve(payment))
        await self._refunds.resume_pending()
        return len(payments)

    async def run_periodically(self, interval_ms: int) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1_000)
            try:
                await self.resolve_all()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("recovery.pass_failed")

    async def _resolve(self, payment: Payment) -> None:
        # Listed before an execution that was still running then ended: that
        # copy is stale. Read it again now that this task holds the payment.
        current = await self._store.get_payment(payment.payment_id)
        if current is None or current.status.is_final:
            return
        payment = current
        bind_payment_ids(payment)
        unsettled = [leg for leg in payment.legs if not leg.status.is_settled]
        attempted = [await self._store.attempted_channels(payment.payment_id, leg.index)
                     for leg in unsettled]
        # A charge is made again only where it may stand: not for a payment
        # that fails whole whatever this leg's charge does.
        failing = payment.mode is PaymentMode.ALL_OR_NOTHING and (
            payment.failure is not None
            or any(leg.status is LegStatus.FAILED for leg in payment.legs)
            or not all(attempted))
        await asyncio.gather(*(self._settle_leg(payment, leg, channels, not failing)
                               for leg, channels in zip(unsettled, attempted)))
        await self._completion.complete(payment)
        log.info("recovery.resolved", status=payment.status.value)

    async def _settle_leg(self, payment: Payment, leg: Leg, channels: list[str],
                          charge_again: bool) -> None:
        """`channels`: those sent the leg's Charge, in order (failover fenced
        the earlier ones). `charge_again`: the last one is sent the Charge
        again under the same key when it has none, rather than fenced."""
        if not channels:
            leg.status = LegStatus.FAILED
            leg.failure = Failure(FailureReason.INTERRUPTED,
                                  "the server stopped before this leg was sent to a channel")
            return
        key = payment.channel_key(leg.index)
        order = ChargeOrder(key, payment.payer, leg.request.payee, leg.request.amount,
                            leg.request.reference)
        records = await asyncio.gather(*(
            self._settlement.charge_again(c, order) if charge_again and c == channels[-1]
            else self._settlement.settle(c, key) for c in channels))
        if any(record is None for record in records):
            leg.status = LegStatus.UNKNOWN  # a channel did not answer; next pass asks again
            return
        captured = [(c, r) for c, r in zip(channels, records) if r.status is ChargeStatus.CAPTURED]
        assert len(captured) <= 1, f"{key} charged on {len(captured)} channels despite fencing"
        declined = [(c, r) for c, r in zip(channels, records) if r.status is ChargeStatus.DECLINED]
        if captured or declined:
            apply_charge_record(leg, *(captured or declined)[0])
            return
        leg.status = LegStatus.FAILED
        leg.failure = Failure(FailureReason.INTERRUPTED,
                              "the server stopped mid-charge; the channel confirmed no charge "
                              "and the charge was voided")
