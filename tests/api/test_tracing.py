"""OpenTelemetry traces: the caller's W3C traceparent continues through
paygrid's server span to every channel call (Charge, GetCharge, Void,
Refund), across the tasks paygrid runs payments, legs and batches in.

Spans are read from the SDK's InMemorySpanExporter, handed to a real app;
the channel simulators record the traceparent each call arrived with."""

from __future__ import annotations

import asyncio
import secrets
import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from tests.support.batch_client import batch_stub, chunk, header, tx
from tests.conftest import TEST_CHANNELS, channel, leg, pay_request

CHANNEL_SERVICE = "/paygrid.channel.v1.PaymentChannel/"


def new_traceparent() -> tuple[str, int, int]:
    trace_id, parent_id = secrets.randbits(128) or 1, secrets.randbits(64) or 1
    return f"00-{trace_id:032x}-{parent_id:016x}-01", trace_id, parent_id


def traceparent_of(span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


async def spans_of_trace(exporter: InMemorySpanExporter, trace_id: int, server_method: str,
                         client_methods: set[str], timeout_s: float = 60) -> tuple:
    """The trace's server span and client spans, once every expected one
    has ended (a client span ends in its call's done callback)."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        servers = [s for s in spans if s.kind is SpanKind.SERVER]
        clients = [s for s in spans if s.kind is SpanKind.CLIENT]
        if servers and {s.name.removeprefix(CHANNEL_SERVICE) for s in clients} >= client_methods:
            assert [s.name for s in servers] == [server_method]
            return servers[0], clients
        assert time.monotonic() < deadline, f"spans of the trace: {[s.name for s in spans]}"
        await asyncio.sleep(0.02)


def received_traceparents(paygrid, trace_id: int) -> list[str]:
    return sorted(value for _, simulator in paygrid.app.simulators.values()
                  for value in simulator.received_traceparents or ()
                  if value.split("-")[1] == f"{trace_id:032x}")


async def start_traced(start_paygrid):
    exporter = InMemorySpanExporter()
    # A short channel deadline, so a lost answer is settled quickly.
    paygrid = await start_paygrid((channel("card", timeout_ms=300), *TEST_CHANNELS[1:]),
                                  span_exporter=exporter)
    for _, simulator in paygrid.app.simulators.values():
        simulator.received_traceparents = []
    return paygrid, exporter


async def test_the_callers_trace_reaches_every_channel_call(start_paygrid) -> None:
    paygrid, exporter = await start_traced(start_paygrid)

    # Two legs charged concurrently; the decline voids the other (Charge, Void).
    traceparent, trace_id, parent_id = new_traceparent()
    failed = (await paygrid.stub.Pay(
        pay_request("t-void", leg("hotel_4711", channel="card"),
                    leg("decline_insufficient_funds", channel="card")),
        metadata=(("traceparent", traceparent),))).payment
    assert failed.status == pb.PAYMENT_STATUS_FAILED
    server, clients = await spans_of_trace(exporter, trace_id, "/paygrid.v1.PaymentService/Pay",
                                           {"Charge", "Void"})
    assert server.parent.span_id == parent_id and server.parent.is_remote
    assert sorted(s.name.removeprefix(CHANNEL_SERVICE) for s in clients) == \
        ["Charge", "Charge", "Void"]
    assert all(s.parent.span_id == server.context.span_id for s in clients)
    # Each channel call carried its own client span as the parent.
    assert received_traceparents(paygrid, trace_id) == sorted(map(traceparent_of, clients))

    # The answer is lost: the charge is found with GetCharge.
    traceparent, trace_id, _ = new_traceparent()
    paid = (await paygrid.stub.Pay(pay_request("t-lost", leg("hang_after_charge_1")),
                                   metadata=(("traceparent", traceparent),), timeout=10)).payment
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    server, clients = await spans_of_trace(exporter, trace_id, "/paygrid.v1.PaymentService/Pay",
                                           {"Charge", "GetCharge"})
    assert all(s.parent.span_id == server.context.span_id for s in clients)
    assert received_traceparents(paygrid, trace_id) == sorted(map(traceparent_of, clients))

    traceparent, trace_id, _ = new_traceparent()
    await paygrid.stub.RefundPayment(
        pb.RefundPaymentRequest(payment_id=paid.payment_id, idempotency_key="t-refund"),
        metadata=(("traceparent", traceparent),))
    server, clients = await spans_of_trace(
        exporter, trace_id, "/paygrid.v1.PaymentService/RefundPayment", {"Refund"})
    assert [s.parent.span_id for s in clients] == [server.context.span_id]
    assert received_traceparents(paygrid, trace_id) == [traceparent_of(clients[0])]


async def test_a_batch_stream_continues_the_callers_trace(start_paygrid) -> None:
    paygrid, exporter = await start_traced(start_paygrid)
    traceparent, trace_id, parent_id = new_traceparent()
    call = batch_stub(paygrid.channel).SubmitBatch(
        iter([header("traced", max_group_size=2), chunk(tx("a"), tx("b"), tx("c"))]),
        metadata=(("traceparent", traceparent),), timeout=30)
    replies = [reply async for reply in call]
    assert replies[-1].summary.status == batch_pb.BATCH_STATUS_COMPLETED
    server, clients = await spans_of_trace(
        exporter, trace_id, "/paygrid.v1.BatchService/SubmitBatch", {"ChargeBatch"})
    assert server.parent.span_id == parent_id
    # The groups (a b, then c) are charged by the run's worker tasks, one
    # bulk call each, under the stream's span.
    assert len(clients) == 2
    assert all(s.parent.span_id == server.context.span_id for s in clients)
    assert received_traceparents(paygrid, trace_id) == sorted(map(traceparent_of, clients))


async def test_a_call_without_a_traceparent_starts_a_trace(start_paygrid) -> None:
    paygrid, exporter = await start_traced(start_paygrid)
    await paygrid.stub.Pay(pay_request("t-root"))
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.parent is None
    _, clients = await spans_of_trace(exporter, server.context.trace_id,
                                      "/paygrid.v1.PaymentService/Pay", {"Charge"})
    assert [s.parent.span_id for s in clients] == [server.context.span_id]
