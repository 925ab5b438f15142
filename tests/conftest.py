"""Shared harness: real paygrid servers on loopback ports, real channel
simulators (gRPC servers), real databases: a SQLite file in a per-test
folder, or a fresh PostgreSQL schema per server (tests/support/postgres_databases.py).

Every test that uses `start_paygrid` or `paygrid` runs on each storage
engine (`[sqlite]`, `[postgresql]`); `@pytest.mark.sqlite_only` keeps one on
SQLite, `--storage-engines=sqlite` runs the whole suite on SQLite only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from tests.support.batch_counts_check import assert_counts_match_items
from paygrid_server.app import PaygridApp
from paygrid_server.config import ChannelConfig, ObservabilityConfig, PostgresConfig, ServerConfig
from paygrid_server.simulator.channel_ledger import ChannelLedger
from paygrid_server.simulator.channel_simulator import ChannelSimulator, SimulatorBehaviour
from tests.support.postgres_databases import (
    ENGINES,
    PostgresDatabases,
    postgres_rows,
    require_postgres,
)

# A test's servers share one PostgreSQL server with every other test's:
# a few connections each is plenty.
TEST_POSTGRES = PostgresConfig(pool_max_connections=4, statement_timeout_ms=30_000,
                               connect_timeout_ms=10_000)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--storage-engines", default=",".join(ENGINES),
                     help="storage engines the storage and API tests run on "
                          f"(comma-separated, of {', '.join(ENGINES)})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a test of SQLite itself (its file, "
                                       "its writer thread): not run on PostgreSQL")
    config.addinivalue_line("markers", "postgresql_only: a test of PostgreSQL itself")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage_engine" not in metafunc.fixturenames:
        return
    engines = [e for e in metafunc.config.getoption("storage_engines").split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise pytest.UsageError(f"--storage-engines: unknown {unknown}; known: {ENGINES}")
    if metafunc.definition.get_closest_marker("sqlite_only"):
        engines = ["sqlite"]
    if metafunc.definition.get_closest_marker("postgresql_only"):
        engines = ["postgresql"]
    metafunc.parametrize("storage_engine", engines, indirect=True)


@pytest.fixture
def storage_engine(request: pytest.FixtureRequest) -> str:
    """"sqlite" or "postgresql"; the latter only where PostgreSQL answers
    (skipped with the reason otherwise, failed under CI=true)."""
    engine = getattr(request, "param", "sqlite")
    if engine == "postgresql":
        require_postgres()
    return engine


@pytest.fixture
async def postgres_databases() -> AsyncIterator[PostgresDatabases]:
    """Fresh, uniquely named PostgreSQL schemas (a database each, to paygrid), dropped after the test."""
    databases = PostgresDatabases()
    yield databases
    await databases.drop_all()

# Three channels with distinct reach, so routing has something to decide.
TEST_CHANNELS = (
    ChannelConfig("card", currencies=frozenset({"USD", "EUR", "GBP", "JPY", "KWD"}), priority=10),
    ChannelConfig("wallet", currencies=frozenset({"USD", "EUR"}), max_amount_minor=100_000,
                  priority=20),
    ChannelConfig("bank_transfer", currencies=frozenset({"EUR", "CHF"}), priority=30),
)


def channel(name: str, **changes) -> ChannelConfig:
    """A test channel with some settings changed."""
    base = next(c for c in TEST_CHANNELS if c.name == name)
    return replace(base, **changes)


def slow(latency_ms: float) -> SimulatorBehaviour:
    return SimulatorBehaviour(latency_ms=latency_ms)


@dataclass
class Paygrid:
    app: PaygridApp
    channel: grpc.aio.Channel
    stub: pb_grpc.PaymentServiceStub
    database: Path | str  # the SQLite file, or the PostgreSQL DSN

    @property
    def engine(self) -> str:
        return self.app.config.database_engine

    def simulator(self, name: str) -> ChannelSimulator:
        return self.app.simulators[name][1]

    def ledger(self, name: str) -> ChannelLedger:
        return self.simulator(name).ledger

    def captured_everywhere(self) -> list:
        return [c for _, sim in self.app.simulators.values() for c in sim.ledger.captured()]

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Reads the database through a connection of its own, as an operator
        would. `?` placeholders, on either engine."""
        if self.engine == "postgresql":
            return postgres_rows(str(self.database), sql, params)
        with sqlite3.connect(self.database) as db:
            return db.execute(sql, params).fetchall()


StartPaygrid = Callable[..., Awaitable[Paygrid]]


@pytest.fixture
async def start_paygrid(tmp_path: Path, storage_engine: str,
                        postgres_databases: PostgresDatabases) -> AsyncIterator[StartPaygrid]:
    started: list[Paygrid] = []

    async def start(channels: tuple[ChannelConfig, ...] = TEST_CHANNELS, span_exporter=None,
                    **settings) -> Paygrid:
        if storage_engine == "postgresql" and "database_path" not in settings:
            settings.setdefault("postgres_dsn", await postgres_databases.create())
            settings.setdefault("postgres", TEST_POSTGRES)
        settings.setdefault("database_path", tmp_path / f"paygrid-{len(started)}.sqlite3")
        database = settings.get("postgres_dsn") or settings["database_path"]
        settings.setdefault("listen", "127.0.0.1:0")
        # Metrics on a free port: many servers run at once in one process.
        settings.setdefault("observability", ObservabilityConfig(metrics_listen="127.0.0.1:0"))
        config = ServerConfig(channels=channels, shutdown_grace_ms=2_000, **settings)
        app = await PaygridApp.start(config, span_exporter)
        channel_ = keyed_channel(f"127.0.0.1:{app.port}")
        harness = Paygrid(app, channel_, pb_grpc.PaymentServiceStub(channel_), database)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.channel.close()
        await harness.app.stop()
    # Whatever a test did to its batches, SQLite's kept counts still equal
    # its items counted (storage/sqlite/batch_item_counts.py).
    for harness in started:
        if harness.engine == "sqlite":
            assert_counts_match_items(harness.database)


@pytest.fixture
async def paygrid(start_paygrid: StartPaygrid) -> Paygrid:
    return await start_paygrid()


def money(currency: str, amount_minor: int, minor_units: int | None = None) -> money_pb2.Money:
    m = money_pb2.Money(currency=currency, amount_minor=amount_minor)
    if minor_units is not None:
        m.minor_units = minor_units
    return m


def leg(payee: str = "merchant_0001", currency: str = "USD", amount_minor: int = 1_000,
        channel: str = "", reference: str = "") -> pb.PayLeg:
    return pb.PayLeg(payee=payee, amount=money(currency, amount_minor), channel=channel,
                     reference=reference)


def pay_request(key: str = "key-1", *legs: pb.PayLeg, mode: int = pb.PAYMENT_MODE_UNSPECIFIED,
                payer: str = "acct_000012345678", **fields) -> pb.PayRequest:
    return pb.PayRequest(idempotency_key=key, payer=payer, legs=list(legs) or [leg()],
                         mode=mode, **fields)


def rich_status(error: grpc.aio.AioRpcError) -> dict[str, object]:
    """The google.rpc details of a failed call, by type name (BadRequest, ...)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} carries no google.rpc.Status"
    found: dict[str, object] = {}
    for packed in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo,
                     error_details_pb2.PreconditionFailure, error_details_pb2.RetryInfo,
                     error_details_pb2.ResourceInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.__name__] = detail
    return found


async def pay_until_final(stub: pb_grpc.PaymentServiceStub, request: pb.PayRequest,
                          timeout: float = 30) -> pb.Payment:
    """Pay with the same key again after each ABORTED (the payment is still
    being settled, e.g. by a restarted server's background recovery), after
    the delay its RetryInfo asks for: what a client does. wait_for_ready: a
    first connection attempt that fails (a channel with a short connect
    timeout, on a loaded machine) is tried again until the deadline, not
    reported as UNAVAILABLE."""
    while True:
        try:
            return (await stub.Pay(request, timeout=timeout, wait_for_ready=True)).payment
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:
                raise
            delay = rich_status(error)["RetryInfo"].retry_delay
            await asyncio.sleep(delay.ToMilliseconds() / 1_000)
