"""The simulated channel's books: charges by idempotency key, refunds, fences.

Plain data with the channel's rules, so tests can read exactly what the
channel holds and compare it with what paygrid recorded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import ChargeStatus


class LedgerRefusal(Exception):
    """The call is invalid for the charge's state (FAILED_PRECONDITION)."""


class LedgerNotFound(Exception):
    pass


@dataclass(slots=True)
class SimulatedCharge:
    idempotency_key: str
    charge_id: str
    status: ChargeStatus
    amount: Money | None  # None: fenced by Void before any charge arrived
    payer: str = ""
    payee: str = ""
    refunded_minor: int = 0
    decline_code: str = ""
    decline_message: str = ""
    created_at_us: int = 0


class ChannelLedger:
    def __init__(self, name: str) -> None:
        self.name = name
        self.charges: dict[str, SimulatedCharge] = {}
        # Every Charge request that reached processing, by key: lets tests
        # prove a replay never called the channel again.
        self.charge_requests: dict[str, int] = {}
        self.refunds: dict[str, tuple[str, int]] = {}  # refund key -> (refund id, amount)
        self._ids = itertools.count(1)

    def _new_id(self, prefix: str) -> str:
        return f"{self.name}_{prefix}_{next(self._ids):08d}"

    def captured(self) -> list[SimulatedCharge]:
        return [c for c in self.charges.values() if c.status is ChargeStatus.CAPTURED]

    def charge(self, key: str, payer: str, payee: str, amount: Money, now_us: int,
               decline_code: str = "") -> SimulatedCharge:
        self.charge_requests[key] = self.charge_requests.get(key, 0) + 1
        existing = self.charges.get(key)
        if existing is not None:
            return existing  # replay (or fenced key): the first outcome stands
        status = ChargeStatus.DECLINED if decline_code else ChargeStatus.CAPTURED
        record = SimulatedCharge(
            idempotency_key=key, charge_id=self._new_id("ch"), status=status, amount=amount,
            payer=payer, payee=payee, decline_code=decline_code,
            decline_message=f"declined: {decline_code}" if decline_code else "",
            created_at_us=now_us)
        self.charges[key] = record
        return record

    def get(self, key: str) -> SimulatedCharge:
        record = self.charges.get(key)
        if record is None:
            raise LedgerNotFound(f"no charge with key {key!r}")
        return record

    def void(self, key: str, now_us: int) -> SimulatedCharge:
        record = self.charges.get(key)
        if record is None:
            record = SimulatedCharge(idempotency_key=key, charge_id=self._new_id("fence"),
                                     status=ChargeStatus.VOIDED, amount=None, created_at_us=now_us)
            self.charges[key] = record
            return record
        if record.status is ChargeStatus.CAPTURED:
            if record.refunded_minor:
                raise LedgerRefusal("a partly refunded charge cannot be voided")
            record.status = ChargeStatus.VOIDED
        return record

    def refund(self, refund_key: str, charge_key: str, amount: Money) -> str:
        record = self.get(charge_key)
        if refund_key in self.refunds:
            return self.refunds[refund_key][0]  # replay
        if record.status is not ChargeStatus.CAPTURED or record.amount is None:
            raise LedgerRefusal(f"charge is {record.status.value}; only a capture is refundable")
        if amount.currency != record.amount.currency:
            raise LedgerRefusal(f"charge is in {record.amount.currency}, not {amount.currency}")
        remaining = record.amount.amount_minor - record.refunded_minor
        if not 0 < amount.amount_minor <= remaining:
            raise LedgerRefusal(f"refund of {amount.amount_minor} exceeds the {remaining} left")
        record.refunded_minor += amount.amount_minor
        refund_id = self._new_id("re")
        self.refunds[refund_key] = (refund_id, amount.amount_minor)
        return refund_id
