"""API keys and tenants: no key is UNAUTHENTICATED, a tenant sees only its
own payments and batches, and probes and reflection need no key."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.api_keys import DEV_API_KEY, ApiKeyEntry, api_key_sha256
from paygrid_server.config import AuthConfig
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import pay_request, rich_status

ACME_KEY = "pgk_acme_test_0123456789abcdef"
GLOBEX_KEY = "pgk_globex_test_fedcba9876543210"
TWO_TENANTS = AuthConfig((ApiKeyEntry("acme", api_key_sha256(ACME_KEY)),
                          ApiKeyEntry("globex", api_key_sha256(GLOBEX_KEY))))


@pytest.fixture
async def tenants(start_paygrid):
    paygrid = await start_paygrid(auth=TWO_TENANTS)
    target = f"127.0.0.1:{paygrid.app.port}"
    channels = {name: keyed_channel(target, key) for name, key in
                (("acme", ACME_KEY), ("globex", GLOBEX_KEY), ("dev", DEV_API_KEY))}
    paygrid.by_tenant = {name: pb_grpc.PaymentServiceStub(ch) for name, ch in channels.items()}
    paygrid.batches_by_tenant = {name: batch_stub(ch) for name, ch in channels.items()}
    yield paygrid
    for channel in channels.values():
        await channel.close()


@pytest.mark.parametrize(("metadata", "reason"), [
    ((), "MISSING_API_KEY"),
    ((("authorization", "Bearer not-a-key"),), "INVALID_API_KEY"),
    ((("authorization", "Basic cGF5Z3JpZDpkZXY="),), "MISSING_API_KEY"),
    ((("x-api-key", "not-a-key"),), "INVALID_API_KEY"),
])
async def test_a_call_without_a_valid_key_is_unauthenticated_and_stores_nothing(
        paygrid, metadata, reason) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.PaymentServiceStub(channel).Pay(pay_request("k-unauth"),
                                                          metadata=metadata)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rich_status(error.value)["ErrorInfo"].reason == reason
    assert paygrid.rows("SELECT count(*) FROM payments") == [(0,)]
    assert paygrid.captured_everywhere() == []


async def test_the_dev_key_works_when_no_key_is_configured_also_as_x_api_key(paygrid) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as channel:
        reply = await pb_grpc.PaymentServiceStub(channel).Pay(
            pay_request("k-dev"), metadata=(("x-api-key", DEV_API_KEY),))
    assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert paygrid.rows("SELECT tenant_id FROM payments") == [("dev",)]


async def test_streams_are_authenticated_too(paygrid) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as channel:
        # Refused before the first message is read. (The client only reads:
        # grpc.aio's Python client reports INTERNAL instead of the server's
        # status when one of its writes races the refusal.)
        call = batch_stub(channel).SubmitBatch()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert paygrid.rows("SELECT count(*) FROM batches") == [(0,)]


async def test_health_and_reflection_need_no_key(tenants) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tenants.app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_dev_key_is_refused_once_keys_are_configured(tenants) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await tenants.by_tenant["dev"].Pay(pay_request("k-dev"))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_tenant_never_sees_another_tenants_payment(tenants) -> None:
    acme, globex = tenants.by_tenant["acme"], tenants.by_tenant["globex"]
    paid = (await acme.Pay(pay_request("order-1"))).payment
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (await acme.GetPayment(pb.GetPaymentRequest(payment_id=paid.payment_id))).payment \
        == paid

    for call in (globex.GetPayment(pb.GetPaymentRequest(payment_id=paid.payment_id)),
                 globex.RefundPayment(pb.RefundPaymentRequest(
                     payment_id=paid.payment_id, idempotency_key="steal-1"))):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        # The same answer as for an id that does not exist: nothing leaks.
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await globex.ListPayments(pb.ListPaymentsRequest())).payments == []
    listed = (await acme.ListPayments(pb.ListPaymentsRequest())).payments
    assert [p.payment_id for p in listed] == [paid.payment_id]
    assert tenants.rows("SELECT count(*) FROM refunds") == [(0,)]


async def test_idempotency_keys_belong_to_their_tenant(tenants) -> None:
    acme, globex = tenants.by_tenant["acme"], tenants.by_tenant["globex"]
    first = (await acme.Pay(pay_request("order-1"))).payment
    other = (await globex.Pay(pay_request("order-1"))).payment  # same key, other tenant
    replay = (await acme.Pay(pay_request("order-1"))).payment
    assert other.payment_id != first.payment_id
    assert replay == first
    assert len(tenants.captured_everywhere()) == 2
    assert sorted(tenants.rows("SELECT tenant_id, idempotency_key FROM payments")) == [
        ("acme", "order-1"), ("globex", "order-1")]


async def test_batch_ids_belong_to_their_tenant(tenants) -> None:
    acme, globex = tenants.batches_by_tenant["acme"], tenants.batches_by_tenant["globex"]
    mine = await submit(acme, header("payroll-2026-11"), chunk(tx("e1"), tx("e2")))
    theirs = await submit(globex, header("payroll-2026-11", payer="acct_globex_0001"),
                          chunk(tx("e1")))
    assert (mine.summary.counts.succeeded, theirs.summary.counts.succeeded) == (2, 1)
    report = (await globex.GetBatch(batch_pb.GetBatchRequest(batch_id="payroll-2026-11"))).batch
    assert (report.payer, report.counts.total) == ("acct_globex_0001", 1)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await tenants.batches_by_tenant["dev"].GetBatch(
            batch_pb.GetBatchRequest(batch_id="payroll-2026-11"))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sorted(tenants.rows("SELECT tenant_id, batch_id FROM batches")) == [
        ("acme", "payroll-2026-11"), ("globex", "payroll-2026-11")]
    assert len(tenants.captured_everywhere()) == 3
