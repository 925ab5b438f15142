"""PostgreSQL going away under a running server: calls get UNAVAILABLE
(ErrorInfo STORAGE_UNAVAILABLE, fault UNREACHABLE), never UNKNOWN, and the
same idempotency key works once the database is back.

The database "goes away" by a real TCP proxy in front of PostgreSQL being
shut (its connections cut, new ones refused), then opened again."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from tests.conftest import pay_request, rich_status
from tests.support.postgres_databases import require_postgres


class TcpProxy:
    """Forwards a loopback port to PostgreSQL until shut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shut(self) -> None:
        self._server.close()
        # Connections first: from Python 3.12 wait_closed() waits for them.
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@pytest.fixture
async def proxied_dsn(postgres_databases):
    require_postgres()
    dsn = await postgres_databases.create()
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.open()
    user = f"{parts.username}@" if parts.username else ""
    yield parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl(), proxy
    await proxy.shut()


@pytest.mark.postgresql_only
async def test_calls_get_unavailable_while_postgres_is_gone_and_work_after(
        start_paygrid, proxied_dsn) -> None:
    dsn, proxy = proxied_dsn
    paygrid = await start_paygrid(postgres_dsn=dsn)
    first = await paygrid.stub.Pay(pay_request("before"), timeout=10)
    assert first.payment.status == pb.PAYMENT_STATUS_SUCCEEDED

    await proxy.shut()
    for call in (paygrid.stub.Pay(pay_request("while-gone"), timeout=10),
                 paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id=first.payment.payment_id),
                                         timeout=10)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
        info = rich_status(raised.value)["ErrorInfo"]
        assert (info.reason, info.metadata["fault"]) == ("STORAGE_UNAVAILABLE", "UNREACHABLE")
        assert rich_status(raised.value)["RetryInfo"].retry_delay.ToMilliseconds() == 1_000
    assert len(paygrid.captured_everywhere()) == 1  # nothing charged while it was gone

    await proxy.open()  # the same port again: PostgreSQL is back
    again = await paygrid.stub.Pay(pay_request("while-gone"), timeout=10)
    assert again.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert len(paygrid.captured_everywhere()) == 2
