"""paygrid.v1.PaymentService: thin translation between gRPC and the domain."""

from __future__ import annotations

import grpc

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.domain.payments.payment_service import PaymentService
from paygrid_server.domain.payments.refund_service import RefundService
from paygrid_server.transport import page_tokens
from paygrid_server.transport.api_key_authentication import caller_tenant
from paygrid_server.transport.payment_messages import (
    pay_input,
    payment_pb,
    refund_input,
    refund_pb,
)
from paygrid_server.transport.status_errors import maps_domain_errors


def _remaining_ms(context: grpc.aio.ServicerContext) -> float | None:
    remaining_s = context.time_remaining()
    return None if remaining_s is None else remaining_s * 1_000


class PaymentServicer(pb_grpc.PaymentServiceServicer):
    def __init__(self, payments: PaymentService, refunds: RefundService) -> None:
        self._payments = payments
        self._refunds = refunds

    @maps_domain_errors
    async def Pay(self, request: pb.PayRequest, context: grpc.aio.ServicerContext):
        payment = await self._payments.pay(caller_tenant(), pay_input(request),
                                          _remaining_ms(context))
        return pb.PayResponse(payment=payment_pb(payment))

    @maps_domain_errors
    async def GetPayment(self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext):
        payment = await self._payments.get(caller_tenant(), request.payment_id)
        return pb.GetPaymentResponse(payment=payment_pb(payment))

    @maps_domain_errors
    async def ListPayments(self, request: pb.ListPaymentsRequest,
                           context: grpc.aio.ServicerContext):
        page, cursor = await self._payments.list(caller_tenant(), request.page_size,
                                                 page_tokens.decode(request.page_token))
        return pb.ListPaymentsResponse(payments=[payment_pb(p) for p in page],
                                       next_page_token=page_tokens.encode(cursor))

    @maps_domain_errors
    async def RefundPayment(self, request: pb.RefundPaymentRequest,
                            context: grpc.aio.ServicerContext):
        refund, payment = await self._refunds.refund(caller_tenant(), refund_input(request),
                                                     _remaining_ms(context))
        return pb.RefundPaymentResponse(refund=refund_pb(refund), payment=payment_pb(payment))
