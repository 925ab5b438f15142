"""Every log line of an RPC carries its request id (and, when spans are
exported, its trace ids), bound once per RPC; the request id is echoed to the caller in the trailing metadata,
whatever the call's status."""

from __future__ import annotations

import asyncio
import re
import uuid

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.batch_client import batch_stub, chunk, collect, header, tx
from tests.conftest import leg, pay_request, rich_status

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def completed(events: list[dict], idempotency_key: str) -> dict:
    [event] = [e for e in events if e["event"] == "payment.completed"
               and e["idempotency_key"] == idempotency_key]
    return event


async def test_payment_logs_carry_the_callers_request_id_and_the_trace(start_paygrid) -> None:
    exporter = InMemorySpanExporter()
    paygrid = await start_paygrid(span_exporter=exporter)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        call = paygrid.stub.Pay(pay_request("r-1", leg(), leg()), metadata=(
            ("x-request-id", "req-7f3a.42"), ("traceparent", TRACEPARENT)))
        await call
    assert ("x-request-id", "req-7f3a.42") in tuple(await call.trailing_metadata())
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    event = completed(events, "r-1")  # the legs are on this line too (test_logging.py)
    assert event["request_id"] == "req-7f3a.42"
    assert event["trace_id"] == TRACE_ID
    assert event["span_id"] == f"{server.context.span_id:016x}"


async def test_a_missing_or_unfit_request_id_is_replaced_by_a_new_one(paygrid) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        plain = paygrid.stub.Pay(pay_request("r-plain"))
        spaced = paygrid.stub.Pay(pay_request("r-spaced"), metadata=(("x-request-id", "a b"),))
        long = paygrid.stub.Pay(pay_request("r-long"), metadata=(("x-request-id", "x" * 129),))
        await asyncio.gather(plain, spaced, long)
    for call, key in ((plain, "r-plain"), (spaced, "r-spaced"), (long, "r-long")):
        echoed = dict(tuple(await call.trailing_metadata()))["x-request-id"]
        uuid.UUID(echoed)  # a new one
        event = completed(events, key)
        assert event["request_id"] == echoed
        # No exporter configured: no spans are made, so no trace ids.
        assert "trace_id" not in event and "span_id" not in event


async def test_with_an_exporter_each_call_without_traceparent_starts_a_trace(
        start_paygrid) -> None:
    paygrid = await start_paygrid(span_exporter=InMemorySpanExporter())
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        await paygrid.stub.Pay(pay_request("r-new-trace"))
    event = completed(events, "r-new-trace")
    assert re.fullmatch(r"[0-9a-f]{32}", event["trace_id"])
    assert event["trace_id"] != "0" * 32


async def test_concurrent_calls_keep_their_own_ids(start_paygrid) -> None:
    paygrid = await start_paygrid(span_exporter=InMemorySpanExporter())
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        await asyncio.gather(*(
            paygrid.stub.Pay(pay_request(f"r-many-{i}", leg(), leg()),
                             metadata=(("x-request-id", f"req-{i}"),))
            for i in range(5)))
    for i in range(5):
        assert completed(events, f"r-many-{i}")["request_id"] == f"req-{i}"
    traces = {completed(events, f"r-many-{i}")["trace_id"] for i in range(5)}
    assert len(traces) == 5


async def test_the_request_id_comes_back_with_errors_and_stream_trailers(paygrid) -> None:
    # An error keeps its google.rpc details beside the request id.
    call = paygrid.stub.Pay(pay_request("", leg(amount_minor=0)),
                            metadata=(("x-request-id", "req-bad"),))
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await call
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "BadRequest" in rich_status(invalid.value)
    assert ("x-request-id", "req-bad") in tuple(invalid.value.trailing_metadata())
    # Refused by authentication, an interceptor inside this one.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as keyless:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.PaymentServiceStub(keyless).GetPayment(
                pb.GetPaymentRequest(payment_id="pay_x"), metadata=(("x-request-id", "req-nokey"),))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert ("x-request-id", "req-nokey") in tuple(refused.value.trailing_metadata())
    # A batch stream's trailers keep its timing figures.
    batch = batch_stub(paygrid.channel).SubmitBatch(
        iter([header("rid-batch"), chunk(tx("a"))]), metadata=(("x-request-id", "req-batch"),))
    reply = await collect(batch)
    assert reply.trailers["x-request-id"] == "req-batch"
    assert "x-paygrid-apt-ms" in reply.trailers
