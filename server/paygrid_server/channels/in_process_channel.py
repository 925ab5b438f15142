"""PaymentChannel that calls the channel simulator's servicer in this
process directly: the same servicer code a gRPC channel would reach, without
the transport. For measuring paygrid's own cost per payment (`simulator = {
in_process = true }`); real channels are remote services.

Statuses the servicer aborts with map to the same errors as over gRPC, and
the call's timeout is enforced here the way a gRPC deadline would be. A
charge the simulator answers at once (ChannelSimulator.charge_at_once: no
fault, latency or hanging test value) is a plain call, with no deadline to
keep.
"""

from __future__ import annotations

import asyncio

import grpc

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid_server.channels.grpc_payment_channel import (
    BULK_CALL_ERRORS,
    CALL_ERRORS,
    charge_batch_records,
    charge_batch_request,
    charge_record,
    money_message,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.bulk_charges import ChargeOrders, ChargeRecords
from paygrid_server.domain.ports.payment_channel import (
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRecord,
)
from paygrid_server.simulator.channel_simulator import ChannelSimulator


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class _DirectContext:
    """The part of grpc.aio.ServicerContext the channel servicer uses."""

    @staticmethod
    async def abort(code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)

    @staticmethod
    def invocation_metadata() -> tuple:
        return ()


_CONTEXT = _DirectContext()


class InProcessPaymentChannel:
    def __init__(self, name: str, servicer: ChannelSimulator) -> None:
        self.name = name
        self.target = "in-process"  # for the start-up log line
        self._servicer = servicer

    async def close(self) -> None:
        pass

    async def _call(self, method, request, timeout_ms: int, errors=CALL_ERRORS):
        try:
            # asyncio.timeout, not wait_for: no extra task per call.
            async with asyncio.timeout(timeout_ms / 1_000):
                return await method(request, _CONTEXT)
        except TimeoutError as error:
            raise ChannelTimeout("DEADLINE_EXCEEDED: no answer in time") from error
        except _Aborted as error:
            kind = errors.get(error.code, ChannelUnavailable)
            raise kind(f"{error.code.name}: {error}") from error

    async def charge(self, key: str, payer: str, payee: str, amount: Money, reference: str,
                     timeout_ms: int) -> ChargeRecord:
        request = pb.ChargeRequest(idempotency_key=key, payer=payer, payee=payee,
                                   amount=money_message(amount), reference=reference)
        response = self._servicer.charge_at_once(request)
        if response is None:
            response = await self._call(self._servicer.Charge, request, timeout_ms)
        return charge_record(response.charge)

    async def charge_batch(self, orders: ChargeOrders, timeout_ms: int) -> ChargeRecords:
        """One ChargeBatch call, as over gRPC: a servicer without it
        (UNIMPLEMENTED) raises BulkChargeUnsupported, and the batch charges
        its items one by one."""
        if not orders:
            return charge_batch_records(orders, pb.ChargeBatchResponse())
        response = await self._call(self._servicer.ChargeBatch, charge_batch_request(orders),
                                    timeout_ms, BULK_CALL_ERRORS)
        return charge_batch_records(orders, response)

    async def get_charge(self, key: str, timeout_ms: int) -> ChargeRecord:
        response = await self._call(
            self._servicer.GetCharge, pb.GetChargeRequest(idempotency_key=key), timeout_ms)
        return charge_record(response.charge)

    async def void(self, key: str, timeout_ms: int) -> ChargeRecord:
        response = await self._call(
            self._servicer.Void, pb.VoidRequest(idempotency_key=key), timeout_ms)
        return charge_record(response.charge)

    async def refund(self, refund_key: str, charge_key: str, amount: Money, timeout_ms: int) -> str:
        response = await self._call(self._servicer.Refund, pb.RefundRequest(
            idempotency_key=refund_key, charge_idempotency_key=charge_key,
            amount=money_message(amount)), timeout_ms)
        return response.refund_id
