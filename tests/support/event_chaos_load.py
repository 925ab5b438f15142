"""The chaos runs' clients (tests/support/event_chaos_scenario.py): Pay calls,
synchronous or accepted, refunds of some that succeeded, and one batch, each
retried with its key until a replica answers it for good."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_client.stream_status import ServerStatus, is_lost_status
from tests.support.batch_client import batch_stub, chunk, collect, header
from tests.support.crash_batch_scenario import batch_transactions
from tests.support.crash_pay_scenario import RETRIED

BATCH_ID = "chaos-batch"
CALL_TIMEOUT_S = 60
RETRY_DELAY_S = 0.05


class ChaosLoad:
    """The clients: each call goes to a seeded live replica and is retried
    (same key) on another while one is down."""

    def __init__(self, channels: list[grpc.aio.Channel], rng: random.Random,
                 outcomes: Counter) -> None:
        self.channels, self.rng, self.outcomes = channels, rng, outcomes
        self.answered = 0  # Pay calls answered (the kill points count these)
        self.refunds: dict[str, str] = {}  # payment_id -> refund idempotency key
        self.batch_released = asyncio.Event()

    def payments(self) -> pb_grpc.PaymentServiceStub:
        return pb_grpc.PaymentServiceStub(self.rng.choice(self.channels))

    async def call(self, method: str, request):
        """A PaymentService `method` on a seeded replica, retried until one answers."""
        while True:
            try:
                return await getattr(self.payments(), method)(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    raise
            await asyncio.sleep(RETRY_DELAY_S)

    async def pay(self, request: pb.PayRequest, refund: bool) -> None:
        while True:
            payment = (await self.call("Pay", request)).payment
            if request.wait == pb.PAY_WAIT_ACCEPTED or \
                    payment.status != pb.PAYMENT_STATUS_PROCESSING:
                break
            await asyncio.sleep(RETRY_DELAY_S)  # still resolving: ask again, same key
        self.answered += 1
        if refund and payment.status == pb.PAYMENT_STATUS_SUCCEEDED:
            key = f"refund-{request.idempotency_key}"
            self.refunds[payment.payment_id] = key
            await self.refund(payment.payment_id, key)

    async def refund(self, payment_id: str, key: str) -> pb.Refund:
        request = pb.RefundPaymentRequest(payment_id=payment_id, idempotency_key=key)
        while True:
            refund = (await self.call("RefundPayment", request)).refund
            if refund.status != pb.REFUND_STATUS_PENDING:
                return refund
            await asyncio.sleep(RETRY_DELAY_S)

    async def batch(self, messages: list) -> None:
        """Submitted again (same batch id) until a submission completes it.
        The last message waits for `batch_released`: a kill before that
        finds the stream open, whatever the machine's speed."""
        async def requests():
            for message in messages[:-1]:
                yield message
            await self.batch_released.wait()
            yield messages[-1]

        while True:
            # From an iterator, not written one by one: a write to a call the
            # kill ended raises InvalidStateError through the key interceptor.
            call = batch_stub(self.rng.choice(self.channels)).SubmitBatch(
                requests(), timeout=CALL_TIMEOUT_S * 5)
            server_status = ServerStatus(call)
            try:
                reply = await collect(call)
            except grpc.aio.AioRpcError as caught:
                # A kill ends the stream UNAVAILABLE; a resubmission while the
                # killed one's run still holds the batch, ABORTED. Either may
                # end the call while this client still writes, and grpc.aio
                # then reports its own INTERNAL: the server's status is used.
                error = server_status.server_error(caught)
                if is_lost_status(error):  # not kept either: it was never received
                    name = "status lost by the client"
                elif error.code() in RETRIED:
                    name = error.code().name
                else:
                    raise error from caught
                self.outcomes[f"batch retried {name}"] += 1
                reply = None
            if reply is not None and reply.summary is not None:
                self.outcomes["batch " + batch_pb.BatchStatus.Name(
                    reply.summary.status).removeprefix("BATCH_STATUS_")] += 1
                return
            await asyncio.sleep(RETRY_DELAY_S)


async def client(load: ChaosLoad, todo: asyncio.Queue) -> None:
    while (call := await todo.get()) is not None:
        await load.pay(*call)


def batch_messages(items: int) -> list:
    transactions = batch_transactions(items)
    return [header(BATCH_ID, payer="acct_payroll_chaos", max_group_size=25, parallelism=2),
            *(chunk(*transactions[i:i + 50]) for i in range(0, items, 50))]
