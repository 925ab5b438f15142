"""The payment entity: a payment, its legs, their states and failures."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from json.encoder import encode_basestring

from paygrid_server.domain.model.money import Money


class PaymentMode(enum.Enum):
    ALL_OR_NOTHING = "ALL_OR_NOTHING"
    INDEPENDENT = "INDEPENDENT"


class PaymentStatus(enum.Enum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self is not PaymentStatus.PROCESSING


class LegStatus(enum.Enum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    VOIDED = "VOIDED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_settled(self) -> bool:
        """The channel's outcome for this leg is known."""
        return self in (LegStatus.SUCCEEDED, LegStatus.FAILED, LegStatus.VOIDED)


class FailureReason(enum.Enum):
    DECLINED = "DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"  # a decline: the channel's code says no funds
    CHANNEL_TIMEOUT = "CHANNEL_TIMEOUT"
    CHANNEL_UNAVAILABLE = "CHANNEL_UNAVAILABLE"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    NO_ELIGIBLE_CHANNEL = "NO_ELIGIBLE_CHANNEL"
    INTERRUPTED = "INTERRUPTED"  # the server stopped mid-leg; the channel confirmed no charge
    OTHER_LEG_FAILED = "OTHER_LEG_FAILED"  # voided by ALL_OR_NOTHING
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # the channel has not confirmed either way yet
    CHANNEL_REJECTED = "CHANNEL_REJECTED"  # the channel refused the call itself
    # Batch items refused on arrival:
    INVALID_ITEM = "INVALID_ITEM"
    DUPLICATE_REFERENCE = "DUPLICATE_REFERENCE"  # the reference came twice in one submission
    REFERENCE_CONFLICT = "REFERENCE_CONFLICT"  # resent with other content than first sent
    BATCH_LIMIT = "BATCH_LIMIT"  # past the batch's item limit
    CONTROL_TOTALS_MISMATCH = "CONTROL_TOTALS_MISMATCH"  # the batch's declared totals did not match
    # Batch failure policies:
    BATCH_STOPPED = "BATCH_STOPPED"  # not charged: STOP_ON_FIRST_FAILURE after an earlier failure
    OTHER_ITEM_FAILED = "OTHER_ITEM_FAILED"  # reversed: ALL_OR_NOTHING_PER_GROUP, another item failed
    REVERSAL_PENDING = "REVERSAL_PENDING"  # must be reversed; the channel could not be reached yet


@dataclass(frozen=True, slots=True)
class Failure:
    reason: FailureReason
    message: str
    decline_code: str = ""


@dataclass(frozen=True, slots=True)
class LegRequest:
    payee: str
    amount: Money
    channel: str  # "" = route by rules
    reference: str


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    idempotency_key: str
    payer: str
    legs: tuple[LegRequest, ...]
    mode: PaymentMode
    metadata: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Digest of everything but the key: a replay must match it exactly.
        It is fingerprint.fingerprint() of {"payer", "mode", "metadata",
        "legs": [[payee, currency, amount_minor, channel, reference], ...]}
        (stored digests stay comparable), with that canonical JSON written
        here as json.dumps writes it (keys sorted, strings escaped by its own
        encoder): it runs for every Pay, at about a third of json.dumps' cost."""
        text = encode_basestring
        legs = ",".join(
            f"[{text(leg.payee)},{text(leg.amount.currency)},"
            f"{int.__repr__(leg.amount.amount_minor)},{text(leg.channel)},{text(leg.reference)}]"
            for leg in self.legs)
        metadata = ",".join(f"{text(key)}:{text(value)}"
                            for key, value in sorted(self.metadata.items()))
        canonical = (f'{{"legs":[{legs}],"metadata":{{{metadata}}},'
                     f'"mode":{text(self.mode.value)},"payer":{text(self.payer)}}}')
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class Leg:
    index: int
    request: LegRequest
    status: LegStatus = LegStatus.PENDING
    channel: str = ""
    channel_reference: str = ""
    failure: Failure | None = None
    attempts: int = 0
    latency_us: int = 0
    refunded_minor: int = 0
    refund_pending_minor: int = 0
    # The channel the leg will try first, recorded as attempted together with
    # the payment itself: one durable write fewer before the first call.
    first_channel: str = ""

    @property
    def refundable_minor(self) -> int:
        if self.status is not LegStatus.SUCCEEDED:
            return 0
        return self.request.amount.amount_minor - self.refunded_minor - self.refund_pending_minor


@dataclass(slots=True)
class Payment:
    payment_id: str
    tenant_id: str  # the owner: only its API keys see the payment
    idempotency_key: str  # unique per tenant
    fingerprint: str
    payer: str
    mode: PaymentMode
    legs: list[Leg]
    metadata: dict[str, str]
    received_at_us: int
    status: PaymentStatus = PaymentStatus.PROCESSING
    failure: Failure | None = None
    completed_at_us: int | None = None
    # The aggregate_version of the payment's last event (0 before it is stored).
    version: int = 0

    def channel_key(self, leg_index: int) -> str:
        """The idempotency key paygrid gives every channel for one leg's charge.

        One key per leg, the same on every retry and every channel, so no
        channel can charge a leg twice.
        """
        return f"{self.payment_id}.{leg_index}"


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """One Charge call, recorded before it is sent so a crash cannot hide it."""

    payment_id: str
    leg_index: int
    attempt_no: int
    channel: str
    started_at_us: int
