"""paygrid.v1.BatchService: thin translation between gRPC streams and the domain."""

from __future__ import annotations

import asyncio
from typing import Callable

import grpc

from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import batch_service_pb2_grpc as pb_grpc
from paygrid_server.domain.model import limits
from paygrid_server.domain.batches.events import BatchEvent, BatchSummary
from paygrid_server.domain.batches.run import BatchRun
from paygrid_server.domain.batches.service import BatchService
from paygrid_server.domain.model.errors import DomainError, FieldViolation, InvalidRequest
from paygrid_server.transport.api_key_authentication import caller_tenant
from paygrid_server.transport.batch_messages import (
    batch_item_pb,
    batch_pb,
    end_totals,
    event_pb,
    header_input,
    item_status_from,
    timing_metadata,
    transaction_inputs,
)
from paygrid_server.transport.status_errors import abort_with, maps_domain_errors


END_OF_STREAM_CONFIRM_S = 0.1


def _protocol_error(field: str, description: str) -> InvalidRequest:
    return InvalidRequest([FieldViolation(field, description)])


def _ignore(event: BatchEvent) -> None:
    pass


class BatchServicer(pb_grpc.BatchServiceServicer):
    def __init__(self, batches: BatchService,
                 observe_event: Callable[[BatchEvent], None] = _ignore) -> None:
        """`observe_event` sees each event streamed to a submitter (metrics)."""
        self._batches = batches
        self._observe_event = observe_event

    async def SubmitBatch(self, request_iterator, context: grpc.aio.ServicerContext):
        try:
            first = await anext(aiter(request_iterator), None)
        except DomainError as error:  # bytes that do not parse (request_decoding)
            await abort_with(context, error)
        if first is None or not first.HasField("header"):
            await abort_with(context, _protocol_error(
                "header", "the first message must carry the batch header"))
        try:
            run = await self._batches.open(caller_tenant(), header_input(first.header))
        except DomainError as error:
            await abort_with(context, error)
        receiving = asyncio.create_task(self._receive(request_iterator, run))
        try:
            async for event in run.outbox.events():
                self._observe_event(event)
                if isinstance(event, BatchSummary):
                    context.set_trailing_metadata(timing_metadata(event.timing))
                yield event_pb(event)
        finally:
            receiving.cancel()
            if not receiving.done() or receiving.cancelled():
                run.abort()  # the stream is gone or over: no more items
            run.outbox.detach()
        if run.refusal is not None:
            await abort_with(context, run.refusal)
        if isinstance(run.failure, DomainError):  # e.g. StorageUnavailable: a clear status
            await abort_with(context, run.failure)
        if run.failure is not None:
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"batch processing stopped: {run.failure}; resubmit the "
                                "batch_id to resume, nothing already done is repeated")

    @staticmethod
    async def _receive(request_iterator, run: BatchRun) -> None:
        try:
            async for message in request_iterator:
                if message.HasField("end"):
                    # Said outright: complete now, no half-close to confirm.
                    # Nothing may follow it, so nothing more is read.
                    await run.end(end_totals(message.end))
                    return
                if not message.HasField("transactions"):
                    run.refuse(_protocol_error("header", "only the first message may carry it"))
                    return
                count = len(message.transactions.transactions)
                if not 1 <= count <= limits.BATCH_MAX_ITEMS_PER_MESSAGE:
                    run.refuse(_protocol_error(
                        "transactions.transactions",
                        f"{count} transactions in one message; send 1 to "
                        f"{limits.BATCH_MAX_ITEMS_PER_MESSAGE}"))
                    return
                await run.submit(transaction_inputs(message.transactions))
            # grpc.aio ends the request iterator the same way for a client's
            # half-close and for its cancel; the cancel reaches this handler a
            # moment later. Only a stream still alive after that is complete.
            await asyncio.sleep(END_OF_STREAM_CONFIRM_S)
            await run.end()
        except DomainError as error:  # a message that does not parse (request_decoding)
            run.refuse(error)
        except (grpc.RpcError, asyncio.CancelledError):
            run.abort()
            raise
        except Exception as error:  # a bug here must not leave the batch waiting for items
            run.failure = error  # forever: the stream ends INTERNAL, the batch resumable
            run.abort()

    @maps_domain_errors
    async def GetBatch(self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext):
        report = await self._batches.report(caller_tenant(), request.batch_id)
        return pb.GetBatchResponse(batch=batch_pb(report))

    async def ListBatchItems(self, request: pb.ListBatchItemsRequest,
                             context: grpc.aio.ServicerContext):
        try:
            async for page in self._batches.items(caller_tenant(), request.batch_id,
                                                  item_status_from(request.status)):
                yield pb.ListBatchItemsResponse(items=[batch_item_pb(item) for item in page])
        except DomainError as error:
            await abort_with(context, error)
