"""The refund entity: money returned from captured legs of a payment."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from paygrid_server.domain.model.fingerprint import fingerprint as digest_of
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure


class RefundStatus(enum.Enum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"
    FAILED = "FAILED"


@dataclass(slots=True)
class RefundLeg:
    leg_index: int
    amount: Money
    channel: str
    status: RefundStatus = RefundStatus.PENDING
    channel_reference: str = ""
    failure: Failure | None = None


@dataclass(slots=True)
class Refund:
    refund_id: str
    payment_id: str
    idempotency_key: str
    fingerprint: str
    reason: str
    legs: list[RefundLeg]
    created_at_us: int
    status: RefundStatus = RefundStatus.PENDING

    def channel_key(self, leg_index: int) -> str:
        return f"{self.refund_id}.{leg_index}"

    def settle_status(self) -> None:
        succeeded = sum(1 for leg in self.legs if leg.status is RefundStatus.SUCCEEDED)
        if any(leg.status is RefundStatus.PENDING for leg in self.legs):
            self.status = RefundStatus.PENDING
        elif succeeded == len(self.legs):
            self.status = RefundStatus.SUCCEEDED
        elif succeeded == 0:
            self.status = RefundStatus.FAILED
        else:
            self.status = RefundStatus.PARTIALLY_SUCCEEDED


@dataclass(frozen=True, slots=True)
class RefundLegRequest:
    leg_index: int
    amount: Money | None  # None: what remains refundable


@dataclass(frozen=True, slots=True)
class RefundRequest:
    payment_id: str
    idempotency_key: str
    legs: tuple[RefundLegRequest, ...]
    reason: str

    def fingerprint(self) -> str:
        body = {
            "reason": self.reason,
            "legs": [
                [leg.leg_index, leg.amount.currency if leg.amount else None,
                 leg.amount.amount_minor if leg.amount else None]
                for leg in self.legs
            ],
        }
        return digest_of(body)
