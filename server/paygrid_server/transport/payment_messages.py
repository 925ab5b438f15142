"""Conversions between paygrid.v1 messages and domain objects. No logic."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Failure,
    Leg,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.domain.model.refund import Refund
from paygrid_server.domain.payments.refund_service import RefundInput, RefundLegInput
from paygrid_server.domain.model.request_validation import (
    LegInput,
    MoneyInput,
    PayInput,
    PayWait,
)
from paygrid_server.transport.failure_status import failure_status
from paygrid_server.transport.protobuf_times import set_duration, set_time

_MODES = {
    pb.PAYMENT_MODE_UNSPECIFIED: None,
    pb.PAYMENT_MODE_ALL_OR_NOTHING: PaymentMode.ALL_OR_NOTHING,
    pb.PAYMENT_MODE_INDEPENDENT: PaymentMode.INDEPENDENT,
}

_WAITS = {
    pb.PAY_WAIT_UNSPECIFIED: None,
    pb.PAY_WAIT_FINAL: PayWait.FINAL,
    pb.PAY_WAIT_ACCEPTED: PayWait.ACCEPTED,
}


def money_input(message: money_pb2.Money) -> MoneyInput:
    return MoneyInput(message.currency, message.amount_minor,
                      message.minor_units if message.HasField("minor_units") else None)


def pay_input(request: pb.PayRequest) -> PayInput:
    mode = _MODES.get(request.mode, f"number {request.mode}")
    return PayInput(
        idempotency_key=request.idempotency_key,
        payer=request.payer,
        legs=[LegInput(leg.payee, money_input(leg.amount) if leg.HasField("amount") else None,
                       leg.channel, leg.reference) for leg in request.legs],
        mode=mode,
        metadata=dict(request.metadata),
        wait=_WAITS.get(request.wait, f"number {request.wait}"),
    )


def refund_input(request: pb.RefundPaymentRequest) -> RefundInput:
    return RefundInput(
        payment_id=request.payment_id,
        idempotency_key=request.idempotency_key,
        legs=[RefundLegInput(leg.leg_index,
                             money_input(leg.amount) if leg.HasField("amount") else None)
              for leg in request.legs],
        reason=request.reason,
    )


def money_pb(money: Money) -> money_pb2.Money:
    return money_pb2.Money(currency=money.currency, amount_minor=money.amount_minor)


def _timestamp(at_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    set_time(stamp, at_us)
    return stamp


def failure_pb(failure: Failure | None) -> pb.Failure | None:
    if failure is None:
        return None
    return pb.Failure(reason=failure.reason.value, decline_code=failure.decline_code,
                      message=failure.message, status=failure_status(failure))


_PAYMENT_MODES = {mode: pb.PaymentMode.Value(f"PAYMENT_MODE_{mode.value}") for mode in PaymentMode}
_PAYMENT_STATUSES = {status: pb.PaymentStatus.Value(f"PAYMENT_STATUS_{status.value}")
                     for status in PaymentStatus}
_LEG_STATUSES = {status: pb.LegStatus.Value(f"LEG_STATUS_{status.value}") for status in LegStatus}


def _add_leg(payment: pb.Payment, leg: Leg) -> None:
    message = payment.legs.add(
        leg_index=leg.index,
        payee=leg.request.payee,
        requested_channel=leg.request.channel,
        reference=leg.request.reference,
        status=_LEG_STATUSES[leg.status],
        channel=leg.channel,
        channel_reference=leg.channel_reference,
        attempts=leg.attempts,
        refunded_amount_minor=leg.refunded_minor,
    )
    message.amount.currency = leg.request.amount.currency
    message.amount.amount_minor = leg.request.amount.amount_minor
    set_duration(message.latency, leg.latency_us)
    if leg.failure is not None:
        message.failure.CopyFrom(failure_pb(leg.failure))


def payment_pb(payment: Payment) -> pb.Payment:
    """Built in place (sub-messages filled where they are, not built apart
    and copied in): it runs for Pay's answer and for each event snapshot."""
    message = pb.Payment(
        payment_id=payment.payment_id,
        idempotency_key=payment.idempotency_key,
        payer=payment.payer,
        mode=_PAYMENT_MODES[payment.mode],
        status=_PAYMENT_STATUSES[payment.status],
        metadata=payment.metadata,
        version=payment.version,
    )
    timing = message.timing
    set_time(timing.received_at, payment.received_at_us)
    if payment.completed_at_us is not None:
        set_time(timing.completed_at, payment.completed_at_us)
        set_duration(timing.processing_time, payment.completed_at_us - payment.received_at_us)
    if payment.failure is not None:
        message.failure.CopyFrom(failure_pb(payment.failure))
    for leg in payment.legs:
        _add_leg(message, leg)
    return message


def refresh_payment_pb(message: pb.Payment, payment: Payment) -> pb.Payment:
    """`message`, payment_pb of this payment in an earlier state, made
    payment_pb of its state now, the same bytes: every field that can change
    after the payment is received is set (or cleared) here; the others (ids,
    payer, mode, metadata, received_at, each leg's request) never change.
    Half of payment_pb's cost, for a payment's snapshots after its first
    (transport/recent_payment_messages.py)."""
    message.status = _PAYMENT_STATUSES[payment.status]
    message.version = payment.version
    timing = message.timing
    if payment.completed_at_us is not None:
        set_time(timing.completed_at, payment.completed_at_us)
        set_duration(timing.processing_time, payment.completed_at_us - payment.received_at_us)
    elif timing.HasField("completed_at"):
        timing.ClearField("completed_at")
        timing.ClearField("processing_time")
    _set_failure(message, payment.failure)
    for leg_message, leg in zip(message.legs, payment.legs, strict=True):
        leg_message.status = _LEG_STATUSES[leg.status]
        leg_message.channel = leg.channel
        leg_message.channel_reference = leg.channel_reference
        leg_message.attempts = leg.attempts
        leg_message.refunded_amount_minor = leg.refunded_minor
        set_duration(leg_message.latency, leg.latency_us)
        _set_failure(leg_message, leg.failure)
    return message


def _set_failure(message: pb.Payment | pb.PaymentLeg, failure: Failure | None) -> None:
    if failure is not None:
        message.failure.CopyFrom(failure_pb(failure))
    elif message.HasField("failure"):
        message.ClearField("failure")


def refund_pb(refund: Refund) -> pb.Refund:
    return pb.Refund(
        refund_id=refund.refund_id,
        payment_id=refund.payment_id,
        idempotency_key=refund.idempotency_key,
        status=pb.RefundStatus.Value(f"REFUND_STATUS_{refund.status.value}"),
        legs=[pb.RefundLegResult(
            leg_index=leg.leg_index, amount=money_pb(leg.amount),
            status=pb.RefundStatus.Value(f"REFUND_STATUS_{leg.status.value}"),
            channel_reference=leg.channel_reference, failure=failure_pb(leg.failure),
        ) for leg in refund.legs],
        reason=refund.reason,
        created_at=_timestamp(refund.created_at_us),
    )
