"""The simulator's ledger records as the channel API's messages: the one
place the simulator's own model (channel_ledger.py) meets protobuf, so the
ledger stays free of it."""

from __future__ import annotations

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_ledger import SimulatedCharge
from paygrid_server.transport.protobuf_times import set_time

_STATUS = {
    ChargeStatus.CAPTURED: pb.CHARGE_STATUS_CAPTURED,
    ChargeStatus.DECLINED: pb.CHARGE_STATUS_DECLINED,
    ChargeStatus.VOIDED: pb.CHARGE_STATUS_VOIDED,
}


def charge_message(record: SimulatedCharge) -> pb.Charge:
    return fill_charge(pb.Charge(), record)


def charge_response(record: SimulatedCharge) -> pb.ChargeResponse:
    response = pb.ChargeResponse()
    fill_charge(response.charge, record)
    return response


def fill_charge(charge: pb.Charge, record: SimulatedCharge) -> pb.Charge:
    """Fills `charge` (a new message, or one in its parent) from `record`.
    Field by field in place: with upb, about half the cost of constructor
    keywords plus CopyFrom and FromMicroseconds, and no copy into the parent."""
    charge.idempotency_key = record.idempotency_key
    charge.charge_id = record.charge_id
    charge.status = _STATUS[record.status]
    charge.refunded_amount_minor = record.refunded_minor
    charge.decline_code = record.decline_code
    charge.decline_message = record.decline_message
    if record.amount is not None:
        charge.amount.currency = record.amount.currency
        charge.amount.amount_minor = record.amount.amount_minor
    set_time(charge.created_at, record.created_at_us)
    return charge
