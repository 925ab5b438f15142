"""PaygridClient: the blocking twin of AsyncPaygridClient (grpc's sync API),
with the same deadlines, retries, idempotency keys, API key and errors."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

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
    batch_requests,
    checked_chunk_items,
    new_idempotency_key,
    pay_request,
    refund_request,
    resumed_watch,
    watch_request,
)
from paygrid_client.retries import NO_RETRIES, Attempts, RetryListener, RetryPolicy
from paygrid_client.timeouts import CallTimeouts


class PaygridClient:
    """Use as `with PaygridClient(target) as client:`; see AsyncPaygridClient
    for the connection options. Not for use inside a running event loop."""

    def __init__(self, target: str = DEFAULT_TARGET, *, api_key: str | None = None,
                 tls_ca: PathLike | None = None, tls_cert: PathLike | None = None,
                 tls_key: PathLike | None = None, tls_server_name: str | None = None,
                 retry_policy: RetryPolicy = RetryPolicy(),
                 timeouts: CallTimeouts = CallTimeouts(),
                 on_retry: RetryListener | None = None,
                 channel_options: Sequence[tuple[str, Any]] = (),
                 channel: grpc.Channel | None = None) -> None:
        self.connection = ConnectionSettings.create(
            target, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
            tls_server_name=tls_server_name, channel_options=channel_options)
        self.retry_policy = retry_policy
        self.timeouts = timeouts
        self._on_retry = on_retry
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else self.connection.open_channel()
        self._payments = pb_grpc.PaymentServiceStub(self._channel)
        self._batches = batch_grpc.BatchServiceStub(self._channel)
        self._events = ev_grpc.EventServiceStub(self._channel)

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> "PaygridClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- payments ---------------------------------------------------------

    def pay(self, payer: str, legs: Sequence[Leg | pb.PayLeg], *,
            mode: pb.PaymentMode.ValueType = pb.PAYMENT_MODE_UNSPECIFIED,
            metadata: Mapping[str, str] | None = None, idempotency_key: str | None = None,
            timeout_s: float | None = None,
            wait: pb.PayWait.ValueType = pb.PAY_WAIT_UNSPECIFIED) -> pb.Payment:
        """See AsyncPaygridClient.pay."""
        key = idempotency_key or new_idempotency_key("pay")
        request = pay_request(payer, legs, idempotency_key=key, mode=mode, metadata=metadata,
                              wait=wait)
        response = self._unary("Pay", self._payments.Pay, request,
                               timeout_s or self.timeouts.pay_s, idempotency_key=key)
        return response.payment

    def get_payment(self, payment_id: str, *, timeout_s: float | None = None) -> pb.Payment:
        return self._unary("GetPayment", self._payments.GetPayment,
                           pb.GetPaymentRequest(payment_id=payment_id),
                           timeout_s or self.timeouts.read_s).payment

    def list_payments_page(self, page_size: int = 0, page_token: str = "", *,
                           timeout_s: float | None = None) -> pb.ListPaymentsResponse:
        return self._unary("ListPayments", self._payments.ListPayments,
                           pb.ListPaymentsRequest(page_size=page_size, page_token=page_token),
                           timeout_s or self.timeouts.read_s)

    def list_payment_pages(self, page_size: int = 0, page_token: str = "", *,
                           timeout_s: float | None = None) -> Iterator[pb.ListPaymentsResponse]:
        while True:
            page = self.list_payments_page(page_size, page_token, timeout_s=timeout_s)
            yield page
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def list_payments(self, page_size: int = 0, *,
                      timeout_s: float | None = None) -> Iterator[pb.Payment]:
        for page in self.list_payment_pages(page_size, timeout_s=timeout_s):
            yield from page.payments

    def refund_payment(self, payment_id: str, legs: Sequence[RefundLeg | pb.RefundLeg] = (), *,
                       reason: str = "", idempotency_key: str | None = None,
                       timeout_s: float | None = None) -> pb.RefundPaymentResponse:
        """See AsyncPaygridClient.refund_payment."""
        key = idempotency_key or new_idempotency_key("refund")
        request = refund_request(payment_id, legs, idempotency_key=key, reason=reason)
        return self._unary("RefundPayment", self._payments.RefundPayment, request,
                           timeout_s or self.timeouts.refund_s, idempotency_key=key)

    # -- batches ----------------------------------------------------------

    def submit_batch(self, batch_id: str, payer: str,
                     transactions: Iterable[batch_pb.BatchTransaction], *,
                     grouping: batch_pb.GroupingPolicy.ValueType =
                     batch_pb.GROUPING_POLICY_UNSPECIFIED,
                     max_group_size: int = 0, parallelism: int = 0,
                     chunk_items: int = DEFAULT_BATCH_CHUNK_ITEMS,
                     control_item_count: int | None = None, control_sum: str = "",
                     failure_policy: batch_pb.FailurePolicy.ValueType =
                     batch_pb.FAILURE_POLICY_UNSPECIFIED,
                     timeout_s: float | None = None,
                     retry_policy: RetryPolicy | None = None
                     ) -> Iterator[batch_pb.SubmitBatchResponse]:
        """See AsyncPaygridClient.submit_batch."""
        header = batch_header(batch_id, payer, grouping, max_group_size, parallelism,
                              control_item_count, control_sum, failure_policy)
        chunk_items = checked_chunk_items(chunk_items)
        policy = NO_RETRIES if iter(transactions) is transactions else (
            retry_policy or self.retry_policy)
        timeout = timeout_s or self.timeouts.batch_submit_s
        yield from self._stream(
            "SubmitBatch", lambda: self._batches.SubmitBatch(
                batch_requests(header, transactions, chunk_items), timeout=timeout,
                metadata=self.connection.auth_metadata),
            policy)

    def get_batch(self, batch_id: str, *, timeout_s: float | None = None) -> batch_pb.Batch:
        return self._unary("GetBatch", self._batches.GetBatch,
                           batch_pb.GetBatchRequest(batch_id=batch_id),
                           timeout_s or self.timeouts.read_s).batch

    def list_batch_items(self, batch_id: str,
                         status: batch_pb.BatchItemStatus.ValueType =
                         batch_pb.BATCH_ITEM_STATUS_UNSPECIFIED, *,
                         timeout_s: float | None = None) -> Iterator[batch_pb.BatchItem]:
        request = batch_pb.ListBatchItemsRequest(batch_id=batch_id, status=status)
        timeout = timeout_s or self.timeouts.batch_items_s
        for response in self._stream(
                "ListBatchItems", lambda: self._batches.ListBatchItems(
                    request, timeout=timeout, metadata=self.connection.auth_metadata),
                self.retry_policy):
            yield from response.items

    # -- events -----------------------------------------------------------

    def list_events_page(self, after_cursor: int = 0, page_size: int = 0, *,
                         type_prefix: str = "", subject: str = "",
                         timeout_s: float | None = None) -> ev.ListEventsResponse:
        """One page of the caller's events after `after_cursor`, in seq order."""
        return self._unary("ListEvents", self._events.ListEvents, ev.ListEventsRequest(
            after_cursor=after_cursor, page_size=page_size, type_prefix=type_prefix,
            subject=subject), timeout_s or self.timeouts.read_s)

    def ack_events(self, consumer: str, up_to_cursor: int, *,
                   timeout_s: float | None = None) -> int:
        """Saves the consumer's position (cumulative); returns the saved cursor."""
        return self._unary("AckEvents", self._events.AckEvents, ev.AckEventsRequest(
            consumer=consumer, up_to_cursor=up_to_cursor),
            timeout_s or self.timeouts.read_s).cursor

    def delete_event_consumer(self, consumer: str, *, timeout_s: float | None = None) -> None:
        self._unary("DeleteEventConsumer", self._events.DeleteEventConsumer,
                    ev.DeleteEventConsumerRequest(consumer=consumer),
                    timeout_s or self.timeouts.read_s)

    def watch_events(self, *, after_cursor: int = 0,
                     start: ev.StartPosition.ValueType = ev.START_POSITION_UNSPECIFIED,
                     consumer: str = "", type_prefix: str = "", subject: str = "",
                     keepalives: bool = False) -> Iterator[ev.WatchEventsResponse]:
        """Frames until the caller stops iterating (no deadline): events,
        and keep-alive frames (only a cursor) when `keepalives`. A dropped
        stream is opened again after the last cursor received, with the
        retry policy's backoff (counted afresh once a frame arrives), so no
        event is yielded twice or skipped."""
        request = watch_request(after_cursor=after_cursor, start=start, consumer=consumer,
                                type_prefix=type_prefix, subject=subject)
        attempts = Attempts(self.retry_policy, "WatchEvents", on_retry=self._on_retry)
        while True:
            call = self._events.WatchEvents(request, metadata=self.connection.auth_metadata)
            try:
                for frame in call:
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
            time.sleep(delay_s)

    # -- retries ----------------------------------------------------------

    def _unary(self, method: str, rpc: Callable[..., Any], request: Any, timeout_s: float, *,
               idempotency_key: str | None = None) -> Any:
        attempts = Attempts(self.retry_policy, method, idempotency_key=idempotency_key,
                            on_retry=self._on_retry)
        while True:
            try:
                return rpc(request, timeout=timeout_s, metadata=self.connection.auth_metadata)
            except grpc.RpcError as rpc_error:
                time.sleep(attempts.delay_after(rpc_error))

    def _stream(self, method: str, open_call: Callable[[], Any],
                policy: RetryPolicy) -> Iterator[Any]:
        attempts = Attempts(policy, method, on_retry=self._on_retry)
        while True:
            call = open_call()
            answered = False
            try:
                for response in call:
                    answered = True
                    yield response
                return
            except grpc.RpcError as rpc_error:
                if answered:
                    # The caller has seen part of the answer: retrying here
                    # would show it twice. Calling again resumes instead.
                    raise attempts.error(rpc_error) from rpc_error
                delay_s = attempts.delay_after(rpc_error)
            finally:
                call.cancel()
            time.sleep(delay_s)
