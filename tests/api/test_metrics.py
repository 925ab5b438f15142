"""Prometheus metrics, scraped over HTTP from a real server's /metrics after
real calls: RPCs by method and status, channel calls, circuit breakers and
batch figures."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.app import PaygridApp
from paygrid_server.config import ObservabilityConfig, ServerConfig
from paygrid_server.observability.metrics import PaygridMetrics
from paygrid_server.transport.call_interceptor import CallInterceptor
from paygrid_server.transport.grpc_server import GenericHandlersOnly
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import TEST_CHANNELS, channel, leg, pay_request

PAYMENTS = "paygrid.v1.PaymentService"


class Scrape:
    """One /metrics page, parsed; value() of a sample absent from it is None."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._values: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self._values.get((name, frozenset(labels.items())))


async def scrape(port: int) -> Scrape:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            return reply.read().decode()

    return Scrape(await asyncio.to_thread(get))


async def scrape_until(port: int, condition, what: str, timeout_s: float = 60) -> Scrape:
    """For outcomes recorded after the client has its answer (a cancel)."""
    deadline = time.monotonic() + timeout_s
    while not condition(page := await scrape(port)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{page.text}"
        await asyncio.sleep(0.05)
    return page


def handled(page: Scrape, service: str, method: str, code: str) -> float | None:
    return page.value("paygrid_grpc_server_handled_total", grpc_service=service,
                      grpc_method=method, grpc_code=code)


def timed(page: Scrape, service: str, method: str, code: str) -> float | None:
    return page.value("paygrid_grpc_server_handling_seconds_count", grpc_service=service,
                      grpc_method=method, grpc_code=code)


async def test_rpcs_are_counted_and_timed_by_method_and_status_code(paygrid) -> None:
    stub = paygrid.stub
    ok = (await stub.Pay(pay_request("m-ok"))).payment
    declined = (await stub.Pay(pay_request("m-declined", leg("decline_insufficient_funds"))))
    assert ok.status == pb.PAYMENT_STATUS_SUCCEEDED
    # A decline is an outcome: the call itself is OK.
    assert declined.payment.status == pb.PAYMENT_STATUS_FAILED
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.Pay(pay_request("", leg(amount_minor=0)))
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetPayment(pb.GetPaymentRequest(payment_id="pay_nope"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    # Refused by the authentication interceptor, which runs inside the metrics one.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as keyless:
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await pb_grpc.PaymentServiceStub(keyless).GetPayment(
                pb.GetPaymentRequest(payment_id="pay_x"))
    assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # A server stream that ends with an abort.
    with pytest.raises(grpc.aio.AioRpcError) as no_batch:
        async for _ in batch_stub(paygrid.channel).ListBatchItems(
                batch_pb.ListBatchItemsRequest(batch_id="nope")):
            pass
    assert no_batch.value.code() is grpc.StatusCode.NOT_FOUND

    page = await scrape(paygrid.app.metrics_port)
    assert handled(page, PAYMENTS, "Pay", "OK") == 2
    assert handled(page, PAYMENTS, "Pay", "INVALID_ARGUMENT") == 1
    assert handled(page, PAYMENTS, "GetPayment", "NOT_FOUND") == 1
    assert handled(page, PAYMENTS, "GetPayment", "UNAUTHENTICATED") == 1
    assert handled(page, "paygrid.v1.BatchService", "ListBatchItems", "NOT_FOUND") == 1
    assert timed(page, PAYMENTS, "Pay", "OK") == 2
    assert timed(page, PAYMENTS, "Pay", "INVALID_ARGUMENT") == 1
    assert page.value("paygrid_grpc_server_handling_seconds_bucket", grpc_service=PAYMENTS,
                      grpc_method="Pay", grpc_code="OK", le="+Inf") == 2
    assert page.value("paygrid_grpc_server_handling_seconds_sum", grpc_service=PAYMENTS,
                      grpc_method="Pay", grpc_code="OK") > 0
    assert handled(page, PAYMENTS, "Pay", "UNKNOWN") is None


async def test_a_cancelled_stream_of_a_coroutine_handler_is_counted(paygrid) -> None:
    """grpc_health's Watch sends with context.write rather than yielding."""
    health = health_pb2_grpc.HealthStub(paygrid.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == \
        health_pb2.HealthCheckResponse.SERVING
    # A deadline far off: a cancel long before it is the client's, not the deadline.
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    page = await scrape_until(
        paygrid.app.metrics_port,
        lambda p: handled(p, "grpc.health.v1.Health", "Watch", "CANCELLED") == 1,
        "the cancelled Watch to be counted")
    assert handled(page, "grpc.health.v1.Health", "Check", "OK") == 1


async def test_a_call_cut_by_its_deadline_is_counted_as_such(paygrid) -> None:
    watch = health_pb2_grpc.HealthStub(paygrid.channel).Watch(
        health_pb2.HealthCheckRequest(), timeout=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        async for _ in watch:
            pass
    assert cut.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await scrape_until(
        paygrid.app.metrics_port,
        lambda p: handled(p, "grpc.health.v1.Health", "Watch", "DEADLINE_EXCEEDED") == 1,
        "the Watch cut by its deadline to be counted")


class _FailingHealth(health_pb2_grpc.HealthServicer):
    """A servicer whose handlers end every way a handler can."""

    async def Check(self, request, context):
        if request.service == "raise":
            raise RuntimeError("a bug")
        if request.service == "abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")
        if request.service == "set_code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
        return health_pb2.HealthCheckResponse()

    async def Watch(self, request, context):
        yield health_pb2.HealthCheckResponse()
        raise RuntimeError("a bug mid-stream")


async def test_calls_ending_by_exception_abort_or_set_code_get_their_status() -> None:
    metrics = PaygridMetrics()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(
        _FailingHealth(), GenericHandlersOnly(server, CallInterceptor(metrics)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel_:
            stub = health_pb2_grpc.HealthStub(channel_)
            codes = {}
            for service in ("", "raise", "abort", "set_code"):
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(service=service))
                    codes[service] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    codes[service] = error.code()
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stub.Watch(health_pb2.HealthCheckRequest()):
                    pass
    finally:
        await server.stop(None)
    assert codes == {"": grpc.StatusCode.OK, "raise": grpc.StatusCode.UNKNOWN,
                     "abort": grpc.StatusCode.FAILED_PRECONDITION,
                     "set_code": grpc.StatusCode.NOT_FOUND}
    assert streamed.value.code() is grpc.StatusCode.UNKNOWN

    def count(method: str, code: str) -> float | None:
        return metrics.registry.get_sample_value(
            "paygrid_grpc_server_handled_total",
            {"grpc_service": "grpc.health.v1.Health", "grpc_method": method, "grpc_code": code})

    # Each call counted once, under the status its client saw.
    for code in ("OK", "UNKNOWN", "FAILED_PRECONDITION", "NOT_FOUND"):
        assert count("Check", code) == 1, code
    assert count("Watch", "UNKNOWN") == 1


async def test_channel_calls_are_timed_and_failures_counted_by_channel_and_method(paygrid) -> None:
    await paygrid.stub.Pay(pay_request("c-ok", leg(channel="card")))
    # The first Charge per key fails UNAVAILABLE, the retry succeeds.
    flaky = (await paygrid.stub.Pay(pay_request("c-flaky", leg("flaky_merchant", channel="card"))))
    assert flaky.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_channel_call_duration_seconds_count",
                      channel="card", method="Charge") == 3
    assert page.value("paygrid_channel_call_errors_total", channel="card", method="Charge",
                      grpc_code="UNAVAILABLE") == 1
    assert page.value("paygrid_channel_call_duration_seconds_count",
                      channel="wallet", method="Charge") is None


async def test_an_open_circuit_breaker_shows_in_its_channel_gauge(start_paygrid) -> None:
    broken = channel("card", simulator=SimulatorBehaviour(failure_rate=1.0))
    paygrid = await start_paygrid((broken, *TEST_CHANNELS[1:]), breaker_failure_threshold=1,
                                  breaker_open_ms=600_000)
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_circuit_breaker_state", channel="card", state="CLOSED") == 1
    payment = (await paygrid.stub.Pay(pay_request("b-1", leg(channel="card")))).payment
    assert payment.status == pb.PAYMENT_STATUS_FAILED
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_circuit_breaker_state", channel="card", state="OPEN") == 1
    assert page.value("paygrid_circuit_breaker_state", channel="card", state="CLOSED") == 0
    assert page.value("paygrid_circuit_breaker_state", channel="card", state="HALF_OPEN") == 0
    assert page.value("paygrid_circuit_breaker_consecutive_failures", channel="card") >= 1
    assert page.value("paygrid_circuit_breaker_state", channel="wallet", state="CLOSED") == 1
    assert page.value("paygrid_channel_call_errors_total", channel="card", method="Charge",
                      grpc_code="UNAVAILABLE") >= 1


async def test_batch_items_by_final_status_and_the_summary_timing(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header("metrics-batch", max_group_size=2),
                         chunk(tx("r1"), tx("r2"), tx("r3"),
                               tx("d1", payee="decline_do_not_honor"),
                               tx("bad", amount_minor=0)))
    summary = reply.summary
    assert summary.status == batch_pb.BATCH_STATUS_COMPLETED
    assert (summary.counts.succeeded, summary.counts.failed, summary.counts.rejected) == (3, 1, 1)
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_batch_items_total", status="SUCCEEDED") == 3
    assert page.value("paygrid_batch_items_total", status="FAILED") == 1
    assert page.value("paygrid_batch_items_total", status="REJECTED") == 1
    assert page.value("paygrid_batch_submissions_total", status="COMPLETED") == 1
    assert page.value("paygrid_batch_apt_seconds_count") == 1
    assert page.value("paygrid_batch_throughput_items_per_second_count") == 1
    # The same figures as the submission's summary.
    apt_s = summary.timing.average_processing_time.ToMicroseconds() / 1_000_000
    assert page.value("paygrid_batch_apt_seconds_sum") == pytest.approx(apt_s)
    assert page.value("paygrid_batch_last_apt_seconds") == pytest.approx(apt_s)
    throughput = summary.timing.throughput_items_per_second
    assert throughput > 0
    assert page.value("paygrid_batch_last_throughput_items_per_second") == \
        pytest.approx(throughput)
    assert page.value("paygrid_batch_throughput_items_per_second_sum") == \
        pytest.approx(throughput)
    assert handled(page, "paygrid.v1.BatchService", "SubmitBatch", "OK") == 1
    # One bulk call per group of two (r1 r2, r3 d1), no per-item Charge.
    assert page.value("paygrid_channel_call_duration_seconds_count",
                      channel="card", method="ChargeBatch") == 2
    assert page.value("paygrid_channel_call_duration_seconds_count",
                      channel="card", method="Charge") is None


async def test_the_endpoint_takes_a_free_port_stops_with_the_app_and_can_be_off(tmp_path) -> None:
    app = await PaygridApp.start(ServerConfig(
        listen="127.0.0.1:0", database_path=tmp_path / "on.sqlite3", channels=TEST_CHANNELS,
        observability=ObservabilityConfig(metrics_listen="127.0.0.1:0")))
    port = app.metrics_port
    try:
        assert port
        assert "paygrid_circuit_breaker_state" in (await scrape(port)).text
    finally:
        await app.stop()
    with pytest.raises(urllib.error.URLError):
        await scrape(port)

    off = await PaygridApp.start(ServerConfig(
        listen="127.0.0.1:0", database_path=tmp_path / "off.sqlite3", channels=TEST_CHANNELS,
        observability=ObservabilityConfig(metrics_listen="")))
    try:
        assert off.metrics_port is None
    finally:
        await off.stop()
