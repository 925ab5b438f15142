"""TLS and mTLS: on paygrid's own port and on the calls to channel stubs,
with certificates made by the test."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.config import ChannelConfig, TlsConfig
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from paygrid_server.tls_credentials import server_credentials
from tests.support.certificates import CertificateFiles, TestCa
from tests.conftest import money, pay_request


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path)


def _client_credentials(ca: TestCa, client: CertificateFiles | None = None
                        ) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.files.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None)


async def _pay(port: int, key: str, credentials: grpc.ChannelCredentials | None) -> pb.Payment:
    async with keyed_channel(f"127.0.0.1:{port}", credentials=credentials) as channel:
        reply = await pb_grpc.PaymentServiceStub(channel).Pay(pay_request(key), timeout=5)
    return reply.payment


async def test_server_tls_serves_tls_clients_only(start_paygrid, ca: TestCa) -> None:
    server = ca.issue("server", "paygrid", server=True)
    paygrid = await start_paygrid(tls=TlsConfig(server.cert, server.key))
    payment = await _pay(paygrid.app.port, "k-tls", _client_credentials(ca))
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _pay(paygrid.app.port, "k-plain", None)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert paygrid.rows("SELECT idempotency_key FROM payments") == [("k-tls",)]


async def test_mtls_needs_a_client_certificate_from_the_trusted_ca(
        start_paygrid, ca: TestCa, tmp_path: Path) -> None:
    server = ca.issue("server", "paygrid", server=True)
    paygrid = await start_paygrid(tls=TlsConfig(server.cert, server.key, ca.files.cert))
    trusted = ca.issue("client", "checkout-service", server=False)
    (tmp_path / "other").mkdir()
    stranger = TestCa(tmp_path / "other", name="stranger CA").issue(
        "stranger", "checkout-service", server=False)

    payment = await _pay(paygrid.app.port, "k-mtls", _client_credentials(ca, trusted))
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for client in (None, stranger):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _pay(paygrid.app.port, "k-refused", _client_credentials(ca, client))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert paygrid.rows("SELECT idempotency_key FROM payments") == [("k-mtls",)]


async def test_channel_stubs_are_called_over_mtls(start_paygrid, ca: TestCa) -> None:
    channel_server = ca.issue("acquirer", "acquirer.internal", server=True)
    server, simulator, port = await start_simulator(
        "acquirer", SimulatorBehaviour(), credentials=server_credentials(
            channel_server.cert, channel_server.key, ca.files.cert))
    try:
        paygrid_client = ca.issue("paygrid-client", "paygrid", server=False)
        paygrid = await start_paygrid((
            ChannelConfig("acquirer", target=f"localhost:{port}", tls_ca_file=ca.files.cert,
                          tls_cert_file=paygrid_client.cert, tls_key_file=paygrid_client.key),
            # Trusts the CA but has no client certificate: the channel refuses it.
            ChannelConfig("acquirer_no_cert", target=f"localhost:{port}",
                          tls_ca_file=ca.files.cert),
        ))
        ok = (await paygrid.stub.Pay(pay_request(
            "k-1", pb.PayLeg(payee="merchant_1", amount=money("EUR", 100), channel="acquirer")))).payment
        assert ok.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert [c.idempotency_key for c in simulator.ledger.captured()] == [
            f"{ok.payment_id}.0"]

        refused = (await paygrid.stub.Pay(pay_request("k-2", pb.PayLeg(
            payee="merchant_1", amount=money("EUR", 100), channel="acquirer_no_cert")))).payment
        assert refused.status == pb.PAYMENT_STATUS_FAILED
        assert refused.legs[0].failure.reason == "CHANNEL_UNAVAILABLE"
        assert len(simulator.ledger.captured()) == 1
    finally:
        await server.stop(None)
