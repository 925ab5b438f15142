"""The simulator's ledger records as the channel API's messages: the one
place the simulator's own model (channel_ledger.py) meets protobuf, so the
ledger stays free of it."""

from __future__ import annotations

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid.type.v1 import money_pb2
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_ledger import SimulatedCharge

_STATUS = {
    ChargeStatus.CAPTURED: pb.CHARGE_STATUS_CAPTURED,
    ChargeStatus.DECLINED: pb.CHARGE_STATUS_DECLINED,
    ChargeStatus.VOIDED: pb.CHARGE_STATUS_VOIDED,
}


def charge_message(record: SimulatedCharge) -> pb.Charge:
    charge = pb.Charge(
        idempotency_key=record.idempotency_key, charge_id=record.charge_id,
        status=_STATUS[record.status], refunded_amount_minor=record.refunded_minor,
        decline_code=record.decline_code, decline_message=record.decline_message)
    if record.amount is not None:
        charge.amount.CopyFrom(money_pb2.Money(currency=record.amount.currency,
                                               amount_minor=record.amount.amount_minor))
    charge.created_at.FromMicroseconds(record.created_at_us)
    return charge
