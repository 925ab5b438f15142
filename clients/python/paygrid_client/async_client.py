"""AsyncPaygridClient: paygrid.v1 PaymentService and BatchService over
grpc.aio, with deadlines, bounded retries, idempotency keys made once per
logical payment or refund, the API key on every call, and typed errors."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

import grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import batch_service_pb2_grpc as batch_grpc
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_client.connection import DEFAULT_TARGET, ConnectionSettings, PathLike
from paygrid_client.request_messages import (
    DEFAULT_BATCH_CHUNK_ITEMS,
    Leg,
    RefundLeg,
    batch_header,
    async_batch_requests,
    batch_requests,
    checked_chunk_items,
    new_idempotency_key,
    pay_request,
    refund_request,
    resumed_watch,
    watch_request,
)
from paygrid_client.retries import NO_RETRIES, Attempts, RetryListener, RetryPolicy
from paygrid_client.stream_status import ServerStatus
from paygrid_client.timeouts import CallTimeouts

Transactions = Iterable[batch_pb.BatchTransaction] | AsyncIterable[batch_pb.BatchTransaction]


class AsyncPaygridClient:
    """Use as `async with AsyncPaygridClient(target) as client:`.

    Pass `channel=` to use a channel you own (it is not closed by the client);
    otherwise one is opened to `target`: TLS when `tls_ca`, `tls_cert` +
    `tls_key` (mutual TLS) or `tls_server_name` is given, plaintext otherwise.
    `api_key` defaults to $PAYGRID_API_KEY, else the development key.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, api_key: str | None = None,
                 tls_ca: PathLike | None = None, tls_cert: PathLike | None = None,
                 tls_key: PathLike | None = None, tls_server_name: str | None = None,
                 retry_policy: RetryPolicy = RetryPolicy(),
                 timeouts: CallTimeouts = CallTimeouts(),
                 on_retry: RetryListener | None = None,
                 channel_options: Sequence[tuple[str, Any]] = (),
                 channel: grpc.aio.Channel | None = None) -> None:
        self.connection = ConnectionSettings.create(
            target, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
            tls_server_name=tls_server_name, channel_options=channel_options)
        self.retry_policy = retry_policy
        self.timeouts = timeouts
        self._on_retry = on_retry
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else self.connection.open_aio_channel()
        self._payments = pb_grpc.PaymentServiceStub(self._channel)
        self._batches = batch_grpc.BatchServiceStub(self._channel)
        self._events = ev_grpc.EventServiceStub(self._channel)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> "AsyncPaygridClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- payments ---------------------------------------------------------

    async def pay(self, payer: str, legs: Sequence[Leg | pb.PayLeg], *,
                  mode: pb.PaymentMode.ValueType = pb.PAYMENT_MODE_UNSPECIFIED,
                  metadata: Mapping[str, str] | None = None,
                  idempotency_key: str | None = None,
                  timeout_s: float | None = None,
                  wait: pb.PayWait.ValueType = pb.PAY_WAIT_UNSPECIFIED) -> pb.Payment:
        """Executes one payment and returns it as it ended, even FAILED (its
        `failure` says why). The idempotency key (given, or made here once)
        is the same on every retry, so the payment is charged at most once;
        on PaygridError, `error.idempotency_key` resumes it safely. With
        wait=PAY_WAIT_ACCEPTED it returns as soon as the server has stored
        the payment (PROCESSING); get_payment shows the outcome later."""
        key = idempotency_key or new_idempotency_key("pay")
        request = pay_request(payer, legs, idempotency_key=key, mode=mode, metadata=metadata,
                              wait=wait)
        response = await self._unary("Pay", self._payments.Pay, request,
                                     timeout_s or self.timeouts.pay_s, idempotency_key=key)
        return response.payment

    async def get_payment(self, payment_id: str, *, timeout_s: float | None = None) -> pb.Payment:
        response = await self._unary("GetPayment", self._payments.GetPayment,
                                     pb.GetPaymentRequest(payment_id=payment_id),
                                     timeout_s or self.timeouts.read_s)
        return response.payment

    async def list_payments_page(self, page_size: int = 0, page_token: str = "", *,
                                 timeout_s: float | None = None) -> pb.ListPaymentsResponse:
        """One page, newest first; page_size 0 is the server's default (50)."""
        return await self._unary("ListPayments", self._payments.ListPayments,
                                 pb.ListPaymentsRequest(page_size=page_size, page_token=page_token),
                                 timeout_s or self.timeouts.read_s)

    async def list_payment_pages(self, page_size: int = 0, page_token: str = "", *,
                                 timeout_s: float | None = None
                                 ) -> AsyncIterator[pb.ListPaymentsResponse]:
        """Every page from `page_token` on (each page its own call and deadline)."""
        while True:
            page = await self.list_payments_page(page_size, page_token, timeout_s=timeout_s)
            yield page
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def list_payments(self, page_size: int = 0, *,
                            timeout_s: float | None = None) -> AsyncIterator[pb.Payment]:
        """Every payment, newest first, fetched page by page."""
        async for page in self.list_payment_pages(page_size, timeout_s=timeout_s):
            for payment in page.payments:
                yield payment

    async def refund_payment(self, payment_id: str, legs: Sequence[RefundLeg | pb.RefundLeg] = (),
                             *, reason: str = "", idempotency_key: str | None = None,
                             timeout_s: float | None = None) -> pb.RefundPaymentResponse:
        """Refunds the legs given, or everything still refundable when none
        are. The key (given, or made here once) is reused on every retry."""
        key = idempotency_key or new_idempotency_key("refund")
        request = refund_request(payment_id, legs, idempotency_key=key, reason=reason)
        return await self._unary("RefundPayment", self._payments.RefundPayment, request,
                                 timeout_s or self.timeouts.refund_s, idempotency_key=key)

    # -- batches ----------------------------------------------------------

    async def submit_batch(self, batch_id: str, payer: str, transactions: Transactions, *,
                           grouping: batch_pb.GroupingPolicy.ValueType =
                           batch_pb.GROUPING_POLICY_UNSPECIFIED,
                           max_group_size: int = 0, parallelism: int = 0,
                           chunk_items: int = DEFAULT_BATCH_CHUNK_ITEMS,
                           control_item_count: int | None = None, control_sum: str = "",
                           failure_policy: batch_pb.FailurePolicy.ValueType =
                           batch_pb.FAILURE_POLICY_UNSPECIFIED,
                           timeout_s: float | None = None,
                           retry_policy: RetryPolicy | None = None
                           ) -> AsyncIterator[batch_pb.SubmitBatchResponse]:
        """Streams the transactions (in chunks) as batch `batch_id` and yields
        the server's answers: rejected, already_processed, group results,
        then the summary. Calling again with the same batch_id resumes it.

        A failure before the first answer (the batch still busy from an
        earlier stream: ABORTED; no connection) is retried when
        `transactions` can be iterated again (a list, a BatchFile); a
        failure after it raises: call again to resume."""
        header = batch_header(batch_id, payer, grouping, max_group_size, parallelism,
                              control_item_count, control_sum, failure_policy)
        chunk_items = checked_chunk_items(chunk_items)

        def requests():
            if isinstance(transactions, AsyncIterable):
                return async_batch_requests(header, transactions, chunk_items)
            return batch_requests(header, transactions, chunk_items)

        policy = retry_policy or self.retry_policy
        if _one_shot(transactions):
            policy = NO_RETRIES
        timeout = timeout_s or self.timeouts.batch_submit_s
        async for response in self._stream(
                "SubmitBatch", lambda: self._batches.SubmitBatch(
                    requests(), timeout=timeout, metadata=self.connection.auth_metadata),
                policy):
            yield response

    async def get_batch(self, batch_id: str, *, timeout_s: float | None = None) -> batch_pb.Batch:
        response = await self._unary("GetBatch", self._batches.GetBatch,
                                     batch_pb.GetBatchRequest(batch_id=batch_id),
                                     timeout_s or self.timeouts.read_s)
        return response.batch

    async def list_batch_items(self, batch_id: str,
                               status: batch_pb.BatchItemStatus.ValueType =
                               batch_pb.BATCH_ITEM_STATUS_UNSPECIFIED, *,
                               timeout_s: float | None = None
                               ) -> AsyncIterator[batch_pb.BatchItem]:
        """The batch's stored items in arrival order, all or one status."""
        request = batch_pb.ListBatchItemsRequest(batch_id=batch_id, status=status)
        timeout = timeout_s or self.timeouts.batch_items_s
        async for response in self._stream(
                "ListBatchItems", lambda: self._batches.ListBatchItems(
                    request, timeout=timeout, metadata=self.connection.auth_metadata),
                self.retry_policy):
            for item in response.items:
                yield item

    # -- events (see PaygridClient) ---------------------------------------

    async def list_events_page(self, after_cursor: int = 0, page_size: int = 0, *,
                               type_prefix: str = "", subject: str = "",
                               timeout_s: float | None = None) -> ev.ListEventsResponse:
        return await self._unary("ListEvents", self._events.ListEvents, ev.ListEventsRequest(
            after_cursor=after_cursor, page_size=page_size, type_prefix=type_prefix,
            subject=subject), timeout_s or self.timeouts.read_s)

    async def ack_events(self, consumer: str, up_to_cursor: int, *,
                         timeout_s: float | None = None) -> int:
        return (await self._unary("AckEvents", self._events.AckEvents, ev.AckEventsRequest(
            consumer=consumer, up_to_cursor=up_to_cursor),
            timeout_s or self.timeouts.read_s)).cursor

    async def delete_event_consumer(self, consumer: str, *,
                                    timeout_s: float | None = None) -> None:
        await self._unary("DeleteEventConsumer", self._events.DeleteEventConsumer,
                          ev.DeleteEventConsumerRequest(consumer=consumer),
                          timeout_s or self.timeouts.read_s)

    async def watch_events(self, *, after_cursor: int = 0,
                           start: ev.StartPosition.ValueType = ev.START_POSITION_UNSPECIFIED,
                           consumer: str = "", type_prefix: str = "", subject: str = "",
                           keepalives: bool = False) -> AsyncIterator[ev.WatchEventsResponse]:
        request = watch_request(after_cursor=after_cursor, start=start, consumer=consumer,
                                type_prefix=type_prefix, subject=subject)
        attempts = Attempts(self.retry_policy, "WatchEvents", on_retry=self._on_retry)
        while True:
            call = self._events.WatchEvents(request, metadata=self.connection.auth_metadata)
            try:
                async for frame in call:
                    attempts = Attempts(self.retry_policy, "WatchEvents",
                                        on_retry=self._on_retry)
                    request = resumed_watch(request, frame.cursor)
                    if keepalives or frame.HasField("event"):
                        yield frame
                return  # the server ended the stream
            except grpc.RpcError as rpc_error:
                delay_s = attempts.delay_after(rpc_error)
            finally:
                call.cancel()
            await asyncio.sleep(delay_s)

    # -- retries ----------------------------------------------------------

    async def _unary(self, method: str, rpc: Callable[..., Awaitable[Any]], request: Any,
                     timeout_s: float, *, idempotency_key: str | None = None) -> Any:
        attempts = Attempts(self.retry_policy, method, idempotency_key=idempotency_key,
                            on_retry=self._on_retry)
        while True:
            try:
                return await rpc(request, timeout=timeout_s,
                                 metadata=self.connection.auth_metadata)
            except grpc.RpcError as rpc_error:
                await asyncio.sleep(attempts.delay_after(rpc_error))

    async def _stream(self, method: str, open_call: Callable[[], Any],
                      policy: RetryPolicy) -> AsyncIterator[Any]:
        attempts = Attempts(policy, method, on_retry=self._on_retry)
        while True:
            call = open_call()
            server_status = ServerStatus(call)  # grpc.aio may replace it (stream_status.py)
            answered = False
            try:
                async for response in call:
                    answered = True
                    yield response
                return
            except grpc.RpcError as caught:
                rpc_error = server_status.server_error(caught)
                if answered:
                    # The caller has seen part of the answer: retrying here
                    # would show it twice. Calling again resumes instead.
                    raise attempts.error(rpc_error) from caught
                delay_s = attempts.delay_after(rpc_error)
            finally:
                call.cancel()
            await asyncio.sleep(delay_s)


def _one_shot(transactions: Transactions) -> bool:
    """An iterator can be read once: a retry could not send its items again."""
    if isinstance(transactions, AsyncIterable):
        return aiter(transactions) is transactions
    return iter(transactions) is transactions
