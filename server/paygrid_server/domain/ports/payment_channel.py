"""What the domain needs from a payment channel, whatever carries the call."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from paygrid_server.domain.model.money import Money

if TYPE_CHECKING:  # bulk_charges builds on this module's ChargeRecord
    from paygrid_server.domain.ports.bulk_charges import ChargeOrders, ChargeRecords

# Charges one charge_batch call may carry (the ChargeBatch contract); more
# is refused as INVALID_ARGUMENT, so callers split larger sets into chunks.
MAX_CHARGES_PER_BATCH_CALL = 1_000


class ChargeStatus(enum.Enum):
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"


class ChargeRecord(NamedTuple):
    """The channel's own record of the charge made with one key. A
    NamedTuple, not a frozen dataclass: as immutable and a third of the cost
    to make (ChargeBatch answers one per item)."""

    idempotency_key: str
    charge_id: str
    status: ChargeStatus
    refunded_minor: int = 0
    decline_code: str = ""
    decline_message: str = ""
    # VOIDED by a Void that came before any charge: no money ever moved.
    fenced: bool = False
    amount: Money | None = None  # what was charged; None when fenced (or not told)


class ChargeOrderLike(Protocol):
    """One charge to make (settlement's charge_again takes one; charge_batch
    takes many as columns, bulk_charges.ChargeOrders). The domain's
    ChargeOrder is one; the port only states the fields it needs, so it
    does not depend on the domain module that depends on it."""

    @property
    def key(self) -> str: ...

    @property
    def payer(self) -> str: ...

    @property
    def payee(self) -> str: ...

    @property
    def amount(self) -> Money: ...

    @property
    def reference(self) -> str: ...


class ChannelCallError(Exception):
    """A channel call that produced no outcome."""


class ChannelUnavailable(ChannelCallError):
    """The channel said it did not process the call, or could not be reached.

    A connection that dropped mid-call also lands here, so the charge may
    still have happened: retry with the same key, or settle before failover.
    """


class ChannelUnreachable(ChannelUnavailable):
    """No connection to the channel could be made, so the call was never
    sent and cannot have charged anything: failing over needs no settling."""


class ChannelTimeout(ChannelCallError):
    """No answer in time: the channel may or may not have acted."""


class ChargeNotFound(ChannelCallError):
    """The channel has no charge for the key."""


class ChannelRefused(ChannelCallError):
    """The channel refused the call as invalid in its state (for example a
    refund above what remains); repeating it will not help."""


class BulkChargeUnsupported(ChannelCallError):
    """The channel does not implement bulk charging (UNIMPLEMENTED). Nothing
    was charged: charge the same orders one by one instead."""


class PaymentChannel(Protocol):
    name: str

    async def charge(
        self, key: str, payer: str, payee: str, amount: Money, reference: str, timeout_ms: int
    ) -> ChargeRecord: ...

    async def charge_batch(self, orders: ChargeOrders, timeout_ms: int) -> ChargeRecords:
        """Makes up to MAX_CHARGES_PER_BATCH_CALL charges in one call; one
        record per order, in order, each idempotent by its key as for
        `charge`. Errors concern the whole call and mean as for `charge`
        (a timeout or dropped connection leaves every order unknown), plus
        BulkChargeUnsupported."""
        ...

    async def get_charge(self, key: str, timeout_ms: int) -> ChargeRecord: ...

    async def void(self, key: str, timeout_ms: int) -> ChargeRecord: ...

    async def refund(
        self, refund_key: str, charge_key: str, amount: Money, timeout_ms: int
    ) -> str:
        """Returns the channel's refund id."""
        ...

    async def close(self) -> None: ...
