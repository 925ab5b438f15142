"""Helpers to drive SubmitBatch from tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import batch_service_pb2_grpc as pb_grpc
from paygrid_client.stream_status import ServerStatus


def tx(reference: str, payee: str | None = None, currency: str = "EUR", amount_minor: int = 100,
       channel: str = "") -> pb.BatchTransaction:
    return pb.BatchTransaction(reference=reference,
                               payee=f"payee_{reference}" if payee is None else payee,
                               amount=money_pb2.Money(currency=currency, amount_minor=amount_minor),
                               channel=channel)


def header(batch_id: str = "batch-1", payer: str = "acct_payroll_0001", **fields) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id=batch_id, payer=payer, **fields))


def chunk(*transactions: pb.BatchTransaction) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest(transactions=pb.BatchTransactions(transactions=list(transactions)))


@dataclass
class BatchReply:
    rejected: list = field(default_factory=list)
    already_processed: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    summary: pb.BatchSummary | None = None
    trailers: dict = field(default_factory=dict)

    @property
    def reported(self) -> list[str]:
        """Every reference told as final, in order; each at most once."""
        return [r.reference for g in self.groups for r in g.items] + [
            r.reference for r in self.already_processed]

    @property
    def results(self) -> dict:
        """Final result per reference, from groups and stored results."""
        found = {r.reference: r for g in self.groups for r in g.items}
        found.update({r.reference: r for r in self.already_processed})
        return found


async def submit(stub: pb_grpc.BatchServiceStub, *messages: pb.SubmitBatchRequest,
                 timeout: float = 60) -> BatchReply:
    # A server that refuses the stream (ABORTED, ...) while messages are still
    # being written ends the call: grpc.aio then replaces its status with
    # INTERNAL "Internal error from Core" (call.write as much as a request
    # iterator); ServerStatus keeps the server's (paygrid_client/stream_status.py).
    call = stub.SubmitBatch(timeout=timeout)
    server_status = ServerStatus(call)
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call has ended: its status is read below
    try:
        return await collect(call)
    except grpc.aio.AioRpcError as caught:
        raise server_status.server_error(caught) from None


async def resubmit(stub: pb_grpc.BatchServiceStub, *messages: pb.SubmitBatchRequest,
                   tries: int = 30) -> BatchReply:
    """submit() a batch whose earlier stream dropped. Its INTERRUPTED status is
    stored before the dropped run lets go of the batch (its submission lease,
    then its in-flight entry): a resubmission in between is told ABORTED with
    a retry delay, and does as a client is told."""
    from tests.conftest import rich_status

    for _ in range(tries - 1):
        try:
            return await submit(stub, *messages)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED, error
            delay = rich_status(error)["RetryInfo"].retry_delay  # type: ignore[attr-defined]
            await asyncio.sleep(delay.ToMilliseconds() / 1_000)
    return await submit(stub, *messages)


async def collect(call) -> BatchReply:
    """Reads the rest of a SubmitBatch call (read(), so it can follow earlier reads)."""
    reply = BatchReply()
    while (response := await call.read()) is not grpc.aio.EOF:
        kind = response.WhichOneof("kind")
        if kind == "group":
            reply.groups.append(response.group)
        elif kind == "summary":
            reply.summary = response.summary
        else:
            getattr(reply, kind).extend(getattr(response, kind).items)
    reply.trailers = dict(await call.trailing_metadata())
    return reply


def open_stream(stub: pb_grpc.BatchServiceStub, timeout: float = 30):
    """A SubmitBatch call fed from a queue; put None to half-close it."""
    outgoing: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (message := await outgoing.get()) is not None:
            yield message

    return stub.SubmitBatch(requests(), timeout=timeout), outgoing


def batch_stub(channel: grpc.aio.Channel) -> pb_grpc.BatchServiceStub:
    return pb_grpc.BatchServiceStub(channel)
