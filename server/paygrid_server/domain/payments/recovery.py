"""Finishes payments and refunds that no live call is driving any more.

At start-up it claims whatever a crash left PROCESSING before the server
serves (marked in flight: a same-key retry gets REQUEST_IN_PROGRESS, a
refund PAYMENT_NOT_CAPTURED) and settles it in the background, so a channel
that hangs delays those payments, never the server's readiness. Afterwards
it runs on a schedule for legs whose channel has not confirmed an outcome. It
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

from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.channel_charge import ChargeOrder
from paygrid_server.domain.charging.settlement import ChargeSettlement
from paygrid_server.domain.payments.leg_dispatch import apply_charge_record
from paygrid_server.domain.model.payment import (
    Failure,
    FailureReason,
    Leg,
    LegStatus,
    Payment,
    PaymentMode,
)
from paygrid_server.domain.payments.completion import PaymentCompletion
from paygrid_server.domain.in_flight import InFlight
from paygrid_server.domain.payments.payment_service import bind_payment_ids
from paygrid_server.domain.payments.refund_service import RefundService
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.domain.ports.payment_store import PaymentStore

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
        self._claimed: set[asyncio.Task] = set()  # start-up settling, for stop()

    async def claim_unfinished(self, retry_after_ms: int) -> int:
        """At start-up, before serving: every payment left PROCESSING is
        marked in flight now and settled in the background,
        RECOVERY_CONCURRENCY at a time; one the channels cannot settle yet
        stays claimed and is tried again every `retry_after_ms` until it is
        final, so a retry is told REQUEST_IN_PROGRESS for as long as the
        channel is away, never handed a half-settled payment. Pending
        refunds are resumed in the background too. Returns how many
        payments were claimed."""
        payments = [p for p in await self._store.list_processing_payments()
                    if p.payment_id not in self._in_flight]
        gate = asyncio.Semaphore(limits.RECOVERY_CONCURRENCY)
        for payment in payments:
            self._keep(self._in_flight.run(
                payment.payment_id, self._settle_in_background(payment, gate, retry_after_ms)))
        self._keep(asyncio.get_running_loop().create_task(self._resume_refunds()))
        return len(payments)

    def _keep(self, task: asyncio.Task) -> None:
        self._claimed.add(task)
        task.add_done_callback(self._claimed.discard)

    async def _settle_in_background(self, payment: Payment, gate: asyncio.Semaphore,
                                    retry_after_ms: int) -> None:
        while True:
            try:
                async with gate:
                    if await self._resolve(payment):
                        return
            except Exception:  # noqa: BLE001 - stays claimed and is tried again
                log.exception("recovery.payment_failed", payment_id=payment.payment_id)
            await asyncio.sleep(retry_after_ms / 1_000)

    async def _resume_refunds(self) -> None:
        try:
            await self._refunds.resume_pending()
        except Exception:  # noqa: BLE001 - the periodic pass resumes them
            log.exception("recovery.refunds_failed")

    async def stop(self) -> None:
        """Cancels the start-up settling still running (the channel may be
        away): its payments stay PROCESSING, resumed at the next start.
        Called before the storage closes."""
        for task in list(self._claimed):
            task.cancel()
        await asyncio.gather(*self._claimed, return_exceptions=True)

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

    async def _resolve(self, payment: Payment) -> bool:
        """True once the payment is final."""
        # Listed before an execution that was still running then ended: that
        # copy is stale. Read it again now that this task holds the payment.
        current = await self._store.get_payment(payment.payment_id)
        if current is None or current.status.is_final:
            return True
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
        return payment.status.is_final

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
