"""Charging a batch group's items with their channel: one ChargeBatch call
per MAX_CHARGES_PER_BATCH_CALL items (or one Charge per item where the
channel cannot take bulk calls), under the same keys on every try, with any
outcome the channel did not confirm settled item by item."""

from __future__ import annotations

import asyncio

import structlog

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.model.batch import Batch, BatchItem, BatchItemStatus, channel_keys
from paygrid_server.domain.charging.channel_charge import (
    ChargeOrder,
    NoOutcome,
    call_with_retries,
    charge_and_settle,
    charge_failure,
)
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.charging.circuit_breaker import BreakerState, CircuitBreaker
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.bulk_charges import ChargeOrders, ChargeRecords
from paygrid_server.domain.ports.payment_channel import (
    MAX_CHARGES_PER_BATCH_CALL,
    BulkChargeUnsupported,
    ChargeRecord,
    ChargeStatus,
    PaymentChannel,
)

log = structlog.get_logger("paygrid.batches")


class GroupCharger:
    def __init__(self, batch: Batch, path: ChargePath, per_item_channels: set[str]) -> None:
        self._batch = batch
        self._router = path.router
        self._channels = path.channels
        self._settlement = path.settlement
        # Channels that answered ChargeBatch with UNIMPLEMENTED: charged per
        # item (shared by every group a replica charges).
        self._per_item_channels = per_item_channels

    async def charge(self, items: list[BatchItem]) -> None:
        """Charges `items`, setting each one's outcome."""
        # Every grouping policy keys on the channel, so this is one channel
        # (charged without the task a gather makes); split anyway rather
        # than rely on it.
        channels = {item.channel for item in items}
        if len(channels) == 1:
            await self._charge_on(channels.pop(), items)
            return
        by_channel: dict[str, list[BatchItem]] = {}
        for item in items:
            by_channel.setdefault(item.channel, []).append(item)
        await asyncio.gather(*(self._charge_on(name, chosen)
                               for name, chosen in by_channel.items()))

    async def settle(self, item: BatchItem, failure: Failure) -> None:
        await self._settle(item, failure)

    async def _charge_on(self, name: str, items: list[BatchItem]) -> None:
        """Charges one channel's items of a group: one ChargeBatch call per
        MAX_CHARGES_PER_BATCH_CALL items, or one Charge per item when the
        channel cannot take bulk calls."""
        channel = self._channels[name]
        # An adapter may predate bulk charging altogether.
        if name in self._per_item_channels or getattr(channel, "charge_batch", None) is None:
            await self._charge_each(items)
            return
        breaker = self._router.breaker(name)
        allowed = []
        if breaker.state is BreakerState.CLOSED:
            allowed = items  # allow() is True for each, and changes nothing
        else:
            for item in items:
                # The same per-item gate as _charge: a HALF_OPEN breaker lets
                # one item through as its probe, so the probe is a one-charge call.
                if breaker.allow():
                    allowed.append(item)
                else:
                    self._fail_circuit_open(item)
        # One call in practice: a group holds at most BATCH_MAX_GROUP_SIZE
        # items, no more than a call takes; the chunking keeps that a choice.
        for start in range(0, len(allowed), MAX_CHARGES_PER_BATCH_CALL):
            await self._charge_in_bulk(channel, allowed[start:start + MAX_CHARGES_PER_BATCH_CALL])

    async def _charge_in_bulk(self, channel: PaymentChannel, items: list[BatchItem]) -> None:
        """One ChargeBatch call for `items` (already let through the breaker),
        with the guarantees of the per-item path: the same keys on every
        try, and an outcome the channel did not confirm settled item by item."""
        breaker = self._router.breaker(channel.name)
        timeout_ms = self._router.route(channel.name).timeout_ms
        deadline_ms = clock.monotonic_ms() + timeout_ms * limits.CHARGE_TRIES_PER_CHANNEL
        orders = ChargeOrders(channel_keys(self._batch.uid, items), self._batch.header.payer,
                              [item.payee for item in items], [item.amount for item in items],
                              [item.reference for item in items])
        try:
            outcome = await _charge_batch_with_retries(channel, breaker, orders, timeout_ms,
                                                       deadline_ms)
        except BulkChargeUnsupported:
            # Nothing was charged. These items already hold their breaker
            # pass, so they go straight to one Charge each.
            log.info("batch.bulk_charge_unsupported", channel=channel.name)
            self._per_item_channels.add(channel.name)
            await self._charge_each(items, breaker_passed=True)
            return
        if isinstance(outcome, NoOutcome) and not outcome.maybe_sent:
            for item in items:  # never reached the channel: nothing to settle
                item.status, item.failure = BatchItemStatus.FAILED, outcome.failure
        elif isinstance(outcome, NoOutcome):
            # Timeout, dropped connection or refusal: any of the charges may
            # have been made. Each item goes the per-item way with its same
            # key: Charge again (a made charge is only replayed), and what
            # stays unanswered is settled with GetCharge, then Void.
            log.warning("batch.bulk_charge_unconfirmed", channel=channel.name,
                        items=len(items), error=outcome.failure.message)
            await self._charge_each(items, maybe_charged=True)
        else:
            self._apply_all(items, outcome)

    async def _charge_each(self, items: list[BatchItem], breaker_passed: bool = False,
                           maybe_charged: bool = False) -> None:
        gate = asyncio.Semaphore(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP)

        async def charge(item: BatchItem) -> None:
            async with gate:
                await self._charge(item, breaker_passed, maybe_charged)

        await asyncio.gather(*(charge(item) for item in items))

    async def _charge(self, item: BatchItem, breaker_passed: bool = False,
                      maybe_charged: bool = False) -> None:
        """One Charge for the item. `maybe_charged`: an earlier call with its
        key went unanswered, so it must not be failed without asking."""
        route = self._router.route(item.channel)
        breaker = self._router.breaker(item.channel)
        if not breaker_passed and not breaker.allow():
            if maybe_charged:
                # Not charged again on a failing channel, but only the
                # channel can say whether the earlier call charged it.
                await self._settle(item, _circuit_open(item.channel))
            else:
                self._fail_circuit_open(item)
            return
        deadline_ms = clock.monotonic_ms() + route.timeout_ms * limits.CHARGE_TRIES_PER_CHANNEL
        outcome = await charge_and_settle(self._channels[item.channel], breaker, self._settlement,
                                          self._order(item), route.timeout_ms, deadline_ms)
        if isinstance(outcome, ChargeRecord):
            self.apply(item, outcome)
        elif isinstance(outcome, NoOutcome):
            self.mark_unknown(item, outcome.failure)
        elif maybe_charged:
            # charge_and_settle skips settling when none of its own calls
            # left this process; the earlier call with the key may have.
            await self._settle(item, outcome)
        else:
            item.status, item.failure = BatchItemStatus.FAILED, outcome

    async def _settle(self, item: BatchItem, failure: Failure) -> None:
        """Takes the channel's record for the item's key (GetCharge, else
        Void fences it); `failure` is why it failed when nothing was charged."""
        record = await self._settlement.settle(item.channel, item.channel_key(self._batch.uid))
        if record is None:
            self.mark_unknown(item, failure)
        elif record.status is ChargeStatus.VOIDED:
            item.status, item.failure = BatchItemStatus.FAILED, failure
        else:
            self.apply(item, record)

    def _order(self, item: BatchItem) -> ChargeOrder:
        return ChargeOrder(item.channel_key(self._batch.uid), self._batch.header.payer,
                           item.payee, item.amount, item.reference)

    @staticmethod
    def _fail_circuit_open(item: BatchItem) -> None:
        item.status, item.failure = BatchItemStatus.FAILED, _circuit_open(item.channel)

    @staticmethod
    def mark_unknown(item: BatchItem, failure: Failure) -> None:
        item.status = BatchItemStatus.UNKNOWN
        item.failure = Failure(FailureReason.OUTCOME_UNKNOWN,
                               f"{failure.message}; settled on resubmission")

    def _apply_all(self, items: list[BatchItem], records: ChargeRecords) -> None:
        """apply() for each item, a capture (the many) read from the
        columns without its whole record."""
        captured, succeeded = ChargeStatus.CAPTURED, BatchItemStatus.SUCCEEDED
        for index, (item, status, charge_id) in enumerate(zip(items, records.statuses,
                                                               records.charge_ids)):
            if status is captured:
                item.channel_reference, item.failure, item.status = charge_id, None, succeeded
            else:
                self.apply(item, records[index])

    @staticmethod
    def apply(item: BatchItem, record: ChargeRecord) -> None:
        item.channel_reference = record.charge_id
        item.failure = charge_failure(item.channel, record)
        item.status = BatchItemStatus.FAILED if item.failure else BatchItemStatus.SUCCEEDED


def _circuit_open(channel: str) -> Failure:
    return Failure(FailureReason.CIRCUIT_OPEN,
                   f"channel {channel!r} is failing; its circuit is open")


async def _charge_batch_with_retries(
    channel: PaymentChannel, breaker: CircuitBreaker, orders: ChargeOrders,
    timeout_ms: int, deadline_ms: float,
) -> ChargeRecords | NoOutcome:
    """One bulk call under charge_with_retries' rules, counted once per
    call. BulkChargeUnsupported is raised."""
    return await call_with_retries(
        channel.name, breaker,
        lambda call_timeout_ms: channel.charge_batch(orders, call_timeout_ms),
        timeout_ms, deadline_ms, "charges")