"""Conversions between paygrid.v1 messages and domain objects. No logic."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, Leg, Payment, PaymentMode
from paygrid_server.domain.model.refund import Refund
from paygrid_server.domain.payments.refund_service import RefundInput, RefundLegInput
from paygrid_server.domain.model.request_validation import (
    LegInput,
    MoneyInput,
    PayInput,
    PayWait,
)
from paygrid_server.transport.failure_status import failure_status

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
    stamp.FromMicroseconds(at_us)
    return stamp


def _duration(us: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(us)
    return duration


def failure_pb(failure: Failure | None) -> pb.Failure | None:
    if failure is None:
        return None
    return pb.Failure(reason=failure.reason.value, decline_code=failure.decline_code,
                      message=failure.message, status=failure_status(failure))


def _leg_pb(leg: Leg) -> pb.PaymentLeg:
    return pb.PaymentLeg(
        leg_index=leg.index,
        payee=leg.request.payee,
        amount=money_pb(leg.request.amount),
        requested_channel=leg.request.channel,
        reference=leg.request.reference,
        status=pb.LegStatus.Value(f"LEG_STATUS_{leg.status.value}"),
        channel=leg.channel,
        channel_reference=leg.channel_reference,
        failure=failure_pb(leg.failure),
        attempts=leg.attempts,
        latency=_duration(leg.latency_us),
        refunded_amount_minor=leg.refunded_minor,
    )


def payment_pb(payment: Payment) -> pb.Payment:
    timing = pb.PaymentTiming(received_at=_timestamp(payment.received_at_us))
    if payment.completed_at_us is not None:
        timing.completed_at.CopyFrom(_timestamp(payment.completed_at_us))
        timing.processing_time.CopyFrom(
            _duration(payment.completed_at_us - payment.received_at_us))
    return pb.Payment(
        payment_id=payment.payment_id,
        idempotency_key=payment.idempotency_key,
        payer=payment.payer,
        mode=pb.PaymentMode.Value(f"PAYMENT_MODE_{payment.mode.value}"),
        status=pb.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        legs=[_leg_pb(leg) for leg in payment.legs],
        metadata=payment.metadata,
        failure=failure_pb(payment.failure),
        timing=timing,
        version=payment.version,
    )


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
