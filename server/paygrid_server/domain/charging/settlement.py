"""Turns a charge call that produced no answer into a known outcome.

settle: asks the channel for the charge made with our key; when it has
none, voids the key, which fences it: a Charge that is still on its way is
refused when it arrives. Only after that may a leg fail over to another
channel, so a leg is never charged on two channels.

charge_again: for a charge a crash interrupted, where the charge should
still be made on the same channel: the channel's record if it made the
charge (adopted), else the Charge sent again under the SAME key (the
channel's idempotency makes a charge already made a replay). A void is a
reversal the payee may see, and some channels have none: it is kept for a
key no call could get an answer about, and for a charge that must not
stand (an all-or-nothing group or payment that failed).
"""

from __future__ import annotations

import enum
from typing import Mapping

import structlog

from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.retries import retry_settlement_call
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import (
    ChannelRefused,
    ChargeNotFound,
    ChargeOrderLike,
    ChargeRecord,
    ChargeStatus,
    PaymentChannel,
)

log = structlog.get_logger("paygrid.settlement")


class Reversal(enum.Enum):
    REVERSED = "REVERSED"  # money had moved; it is now voided or refunded
    NOTHING_CHARGED = "NOTHING_CHARGED"  # no charge (key fenced) or it was declined
    NOT_DONE = "NOT_DONE"  # the channel could not be reached, or refused: try later


class ChargeSettlement:
    def __init__(self, channels: Mapping[str, PaymentChannel]) -> None:
        self._channels = channels

    async def settle(self, channel_name: str, key: str) -> ChargeRecord | None:
        """The channel's final record for `key`; a fenced key comes back
        VOIDED. None when the channel could not be reached to say."""
        channel = self._channels[channel_name]
        timeout_ms = limits.SETTLEMENT_CALL_TIMEOUT_MS

        async def look_up_or_fence() -> ChargeRecord:
            try:
                return await channel.get_charge(key, timeout_ms)
            except ChargeNotFound:
                return await channel.void(key, timeout_ms)

        return await retry_settlement_call(look_up_or_fence, "settlement.retry",
                                           channel=channel_name, key=key)

    async def charge_again(self, channel_name: str, order: ChargeOrderLike) -> ChargeRecord | None:
        """The channel's final record for `order.key` after an interrupted
        Charge: the charge it made, or the one made now with the same key.
        Fenced (settle) only when the channel answered neither call; None
        when it could not be reached at all (ask again later)."""
        channel = self._channels[channel_name]
        timeout_ms = limits.SETTLEMENT_CALL_TIMEOUT_MS

        async def look_up_or_charge() -> ChargeRecord:
            try:
                return await channel.get_charge(order.key, timeout_ms)
            except ChargeNotFound:
                return await channel.charge(order.key, order.payer, order.payee, order.amount,
                                            order.reference, timeout_ms)

        try:
            record = await retry_settlement_call(look_up_or_charge, "recharge.retry",
                                                 channel=channel_name, key=order.key)
        except ChannelRefused as error:
            # The channel will not take this charge again (e.g. it holds the
            # key in a state it cannot replay): fence it, as before adoption.
            log.warning("recharge.refused", channel=channel_name, key=order.key,
                        error=str(error))
            record = None
        if record is not None:
            return record
        return await self.settle(channel_name, order.key)

    async def reverse(self, channel_name: str, key: str, amount: Money) -> Reversal:
        """Cancels whatever was charged with `key` (void, or a full refund
        when the channel can no longer void), and says whether money had
        moved. NOT_DONE: the resolver tries again later."""
        channel = self._channels[channel_name]
        timeout_ms = limits.SETTLEMENT_CALL_TIMEOUT_MS

        async def void_or_refund() -> Reversal:
            try:
                record = await channel.void(key, timeout_ms)
            except ChannelRefused:
                await channel.refund(f"{key}.reversal", key, amount, timeout_ms)
                return Reversal.REVERSED
            if record.fenced or record.status is ChargeStatus.DECLINED:
                return Reversal.NOTHING_CHARGED
            return Reversal.REVERSED

        try:
            result = await retry_settlement_call(void_or_refund, "reversal.retry",
                                                 channel=channel_name, key=key)
        except ChannelRefused as error:
            # Neither voidable nor refundable: money is held and a person must look.
            log.error("reversal.refused", channel=channel_name, key=key, error=str(error))
            return Reversal.NOT_DONE
        return result or Reversal.NOT_DONE
