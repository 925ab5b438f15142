"""PaymentChannel over gRPC (grpc.aio) to a paygrid.channel.v1 service."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence

import grpc

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid.channel.v1 import payment_channel_pb2_grpc as pb_grpc
from paygrid.type.v1 import money_pb2
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.bulk_charges import ChargeOrders, ChargeRecords
from paygrid_server.domain.ports.payment_channel import (
    BulkChargeUnsupported,
    ChannelCallError,
    ChannelRefused,
    ChannelTimeout,
    ChannelUnavailable,
    ChannelUnreachable,
    ChargeNotFound,
    ChargeRecord,
    ChargeStatus,
)

_STATUS = {
    pb.CHARGE_STATUS_CAPTURED: ChargeStatus.CAPTURED,
    pb.CHARGE_STATUS_DECLINED: ChargeStatus.DECLINED,
    pb.CHARGE_STATUS_VOIDED: ChargeStatus.VOIDED,
}

# What a call's status means (shared with the in-process channel).
CALL_ERRORS: dict[grpc.StatusCode, type[ChannelCallError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: ChannelTimeout,
    grpc.StatusCode.CANCELLED: ChannelTimeout,
    grpc.StatusCode.NOT_FOUND: ChargeNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: ChannelRefused,
    grpc.StatusCode.INVALID_ARGUMENT: ChannelRefused,
    grpc.StatusCode.OUT_OF_RANGE: ChannelRefused,
}
# A channel server that predates ChargeBatch answers UNIMPLEMENTED without
# processing anything; every other status means what it means for Charge.
BULK_CALL_ERRORS = {**CALL_ERRORS, grpc.StatusCode.UNIMPLEMENTED: BulkChargeUnsupported}
# How long an UNIMPLEMENTED answer is believed before ChargeBatch is tried
# again, so a channel that gains bulk charging is used without a restart.
BULK_UNSUPPORTED_RECHECK_S = 300.0


_VOIDED = pb.CHARGE_STATUS_VOIDED

# Told of each unary call's end: the method's short name ("Charge"), its
# status and its seconds (channel metrics).
CallObserver = Callable[[str, grpc.StatusCode, float], None]


def ignore_call(method: str, code: grpc.StatusCode, seconds: float) -> None:
    pass


def charge_record(charge: pb.Charge) -> ChargeRecord:
    # Positional, fields read once: ChargeBatch makes one per item.
    status = _STATUS.get(charge.status)
    if status is None:
        raise ChannelUnavailable(f"channel sent an unknown charge status {charge.status}")
    has_amount = charge.HasField("amount")
    amount = charge.amount
    return ChargeRecord(
        charge.idempotency_key, charge.charge_id, status, charge.refunded_amount_minor,
        charge.decline_code, charge.decline_message,
        # fenced: VOIDED by a Void that came before any charge
        charge.status == _VOIDED and not has_amount,
        Money(amount.currency, amount.amount_minor) if has_amount else None)


def money_message(money: Money) -> money_pb2.Money:
    return money_pb2.Money(currency=money.currency, amount_minor=money.amount_minor)


def charge_batch_request(orders: ChargeOrders) -> pb.ChargeBatchRequest:
    # Filled in place from the columns (building each ChargeRequest apart
    # and copying it in costs twice as much, per item of every batch), a
    # field at a time (upb takes keyword arguments to add() at 1.2-1.6x).
    request = pb.ChargeBatchRequest()
    add, payer = request.charges.add, orders.payer
    for key, payee, reference, amount in zip(orders.keys, orders.payees, orders.references,
                                             orders.amounts):
        charge = add()
        charge.idempotency_key, charge.payer, charge.payee = key, payer, payee
        charge.reference = reference
        money = charge.amount
        money.currency, money.amount_minor = amount.currency, amount.amount_minor
    return request


def charge_batch_records(orders: ChargeOrders,
                         response: pb.ChargeBatchResponse) -> ChargeRecords:
    """The answer's records; whole ChargeRecords are made only when read."""
    # A list: each pass over the repeated field would make its elements'
    # Python objects again (see batch_messages.transaction_inputs).
    charges = list(response.charges)
    # An answer that does not pair up with the request tells nothing
    # reliable about any key; the caller treats it like a lost answer.
    if [charge.idempotency_key for charge in charges] != orders.keys:
        raise ChannelUnavailable(f"channel's {len(charges)} charges do not match the "
                                 f"{len(orders)} asked for, key by key")
    statuses = [_STATUS.get(charge.status) for charge in charges]
    if None in statuses:
        charge_record(charges[statuses.index(None)])  # raises, naming the status
    return ChargeRecords([charge.charge_id for charge in charges], statuses,
                         lambda index: charge_record(charges[index]))


class GrpcPaymentChannel:
    def __init__(self, name: str, target: str,
                 credentials: grpc.ChannelCredentials | None = None,
                 server_name: str | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
                 observe_call: CallObserver = ignore_call) -> None:
        """`interceptors` see every call (tracing), first outermost;
        `observe_call` is told how each unary call ended (metrics)."""
        self.name = name
        self.target = target
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, interceptors=interceptors)
        else:
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self._channel = grpc.aio.secure_channel(target, credentials, options=options,
                                                    interceptors=interceptors)
        self._stub = pb_grpc.PaymentChannelStub(self._channel)
        self._observe_call = observe_call
        self._bulk_unsupported_until = 0.0  # time.monotonic() seconds

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request, timeout_ms: int, errors=CALL_ERRORS):
        """`method`: the stub's, by its short name."""
        started = time.perf_counter()
        try:
            response = await getattr(self._stub, method)(request, timeout=timeout_ms / 1_000)
        except asyncio.CancelledError:
            self._observe_call(method, grpc.StatusCode.CANCELLED, time.perf_counter() - started)
            raise
        except grpc.aio.AioRpcError as error:
            self._observe_call(method, error.code(), time.perf_counter() - started)
            # Anything unlisted (UNAVAILABLE, UNKNOWN, INTERNAL...) gave no
            # outcome; the caller retries with the same key or settles.
            kind = errors.get(error.code(), ChannelUnavailable)
            # gRPC core's wording when no connection could be made: the call
            # never left this process.
            if error.code() is grpc.StatusCode.UNAVAILABLE and \
                    "failed to connect to all addresses" in (error.details() or ""):
                kind = ChannelUnreachable
            raise kind(f"{error.code().name}: {error.details()}") from error
        self._observe_call(method, grpc.StatusCode.OK, time.perf_counter() - started)
        return response

    async def charge(self, key: str, payer: str, payee: str, amount: Money, reference: str,
                     timeout_ms: int) -> ChargeRecord:
        response = await self._call("Charge", pb.ChargeRequest(
            idempotency_key=key, payer=payer, payee=payee, amount=money_message(amount),
            reference=reference), timeout_ms)
        return charge_record(response.charge)

    async def charge_batch(self, orders: ChargeOrders, timeout_ms: int) -> ChargeRecords:
        if not orders:
            return charge_batch_records(orders, pb.ChargeBatchResponse())
        if time.monotonic() < self._bulk_unsupported_until:
            raise BulkChargeUnsupported(f"channel {self.name!r} does not implement ChargeBatch")
        try:
            response = await self._call("ChargeBatch", charge_batch_request(orders),
                                        timeout_ms, BULK_CALL_ERRORS)
        except BulkChargeUnsupported:
            self._bulk_unsupported_until = time.monotonic() + BULK_UNSUPPORTED_RECHECK_S
            raise
        return charge_batch_records(orders, response)

    async def get_charge(self, key: str, timeout_ms: int) -> ChargeRecord:
        response = await self._call(
            "GetCharge", pb.GetChargeRequest(idempotency_key=key), timeout_ms)
        return charge_record(response.charge)

    async def list_charges(self, timeout_ms: int) -> list[ChargeRecord]:
        """Every charge the channel holds (its settlement report), for
        reconciliation; not part of the charging path, so not retried."""
        try:
            return [charge_record(charge)
                    async for page in self._stub.ListCharges(pb.ListChargesRequest(),
                                                             timeout=timeout_ms / 1_000)
                    for charge in page.charges]
        except grpc.aio.AioRpcError as error:
            raise CALL_ERRORS.get(error.code(), ChannelUnavailable)(
                f"channel {self.name!r}: ListCharges: {error.code().name}: "
                f"{error.details()}") from error

    async def void(self, key: str, timeout_ms: int) -> ChargeRecord:
        response = await self._call(
            "Void", pb.VoidRequest(idempotency_key=key), timeout_ms)
        return charge_record(response.charge)

    async def refund(self, refund_key: str, charge_key: str, amount: Money, timeout_ms: int) -> str:
        response = await self._call("Refund", pb.RefundRequest(
            idempotency_key=refund_key, charge_idempotency_key=charge_key,
            amount=money_message(amount)), timeout_ms)
        return response.refund_id
