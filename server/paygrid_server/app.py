"""Composition root: builds storage, channels, domain and transport, and
owns their start and stop order. The only module that knows them all."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
import structlog
from opentelemetry.sdk.trace.export import SpanExporter

from paygrid_server import startup_failure, worker_supervisor
from paygrid_server.worker_payment_counts import sibling_payment_counts
from paygrid_server.api_keys import DEV_TENANT, ApiKeyRegistry
from paygrid_server.channels.channel_from_config import grpc_channel_for
from paygrid_server.channels.in_process_channel import InProcessPaymentChannel
from paygrid_server.app_storage import open_storage
from paygrid_server.config import ServerConfig
from paygrid_server.storage.database import Database
from paygrid_server.domain.batches.workers import BatchLeaseLimits, GroupWorkers
from paygrid_server.domain.batches.service import BatchService
from paygrid_server.domain.events.event_consumers import EventConsumers
from paygrid_server.domain.events.event_queries import EventQueries
from paygrid_server.domain.events.event_retention import (
    US_PER_DAY,
    EventRetention,
    RetentionPolicy,
)
from paygrid_server.domain.events.event_relay import EventRelay
from paygrid_server.event_relay_from_config import event_relay_for
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.charging.settlement import ChargeSettlement
from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.payments.leg_dispatch import LegDispatcher
from paygrid_server.domain.payments.completion import PaymentCompletion
from paygrid_server.domain.payments.recovery import PaymentRecovery
from paygrid_server.domain.in_flight import InFlight
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.payments.payment_service import PaymentService
from paygrid_server.domain.payments.refund_service import RefundService
from paygrid_server.domain.charging.routing import ChannelRoute, Router
from paygrid_server.observability.app_observability import AppObservability
from paygrid_server.domain.ports.payment_channel import PaymentChannel
from paygrid_server.simulator.channel_ledger import ChannelLedger
from paygrid_server.simulator.channel_simulator import ChannelSimulator, start_simulator
from paygrid_server.transport.batch_servicer import BatchServicer
from paygrid_server.transport.event_servicer import EventServicer
from paygrid_server.transport.call_cutoff import CallCutoff
from paygrid_server.transport.call_interceptor import CallInterceptor
from paygrid_server.transport.grpc_server import (
    ConnectionPolicy,
    PortUnavailable,
    RunningServer,
    start_grpc_server,
)
from paygrid_server.transport.load_shedding import LoadShedding
from paygrid_server.tls_credentials import server_credentials
from paygrid_server.transport.payment_servicer import PaymentServicer

log = structlog.get_logger("paygrid.app")

# After the grace, how long calls cut off get to send their status before
# grpc cancels them itself.
CUT_OFF_ANSWER_S = 1.0


@dataclass
class PaygridApp:
    config: ServerConfig
    database: Database
    grpc: RunningServer
    in_flight: InFlight
    channels: dict[str, PaymentChannel]
    breakers: dict[str, CircuitBreaker]
    # In-process simulators by channel; the server is None for one called directly.
    simulators: dict[str, tuple[grpc.aio.Server | None, ChannelSimulator]] = field(
        default_factory=dict)
    recovery_task: asyncio.Task | None = None
    load_shedding: LoadShedding | None = None
    observability: AppObservability | None = None
    group_workers: GroupWorkers | None = None
    recovery: PaymentRecovery | None = None
    cutoff: CallCutoff | None = None
    event_retention: EventRetention | None = None
    retention_task: asyncio.Task | None = None
    event_relay: EventRelay | None = None  # publishes the event log to RabbitMQ, when configured

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def metrics_port(self) -> int | None:
        """The /metrics port (the chosen one when configured as port 0); None when off."""
        return self.observability.metrics_port if self.observability else None

    @classmethod
    async def start(cls, config: ServerConfig,
                    span_exporter: SpanExporter | None = None) -> "PaygridApp":
        """`span_exporter` also gets every finished span (tests read spans there).
        A step that fails closes, in reverse, what the steps before it opened
        (threads, files, ports), so a failed start leaves nothing running; a
        failure the operator can fix is raised as a StartupFailure."""
        opened: list[Callable[[], Awaitable[object]]] = []
        try:
            return await cls._start(config, span_exporter, opened)
        except BaseException:
            for close in reversed(opened):
                try:
                    await close()
                except Exception:  # noqa: BLE001 - the rest must still be closed
                    log.warning("server.start_cleanup_failed", exc_info=True)
            raise

    @classmethod
    async def _start(cls, config: ServerConfig, span_exporter: SpanExporter | None,
                     opened: list[Callable[[], Awaitable[object]]]) -> "PaygridApp":
        startup_failure.check_tls_files(config.tls)
        observability = AppObservability(config.observability, span_exporter)
        opened.append(observability.stop)
        try:
            storage = await open_storage(config)
        except Exception as error:
            failure = startup_failure.database_failure(error, config.database_shown)
            if failure is None:
                raise
            raise failure from None
        database, store, batch_store = storage.database, storage.payments, storage.batches
        opened.append(database.close)
        simulators: dict[str, tuple[grpc.aio.Server | None, ChannelSimulator]] = {}
        channels: dict[str, PaymentChannel] = {}
        for channel in config.channels:
            target = channel.target
            if target is None and channel.simulator_in_process:
                simulator = ChannelSimulator(ChannelLedger(channel.name), channel.simulator)
                simulators[channel.name] = (None, simulator)
                channels[channel.name] = InProcessPaymentChannel(channel.name, simulator)
                continue
            if target is None:
                server, simulator, port = await start_simulator(channel.name, channel.simulator)
                opened.append(functools.partial(server.stop, None))
                simulators[channel.name] = (server, simulator)
                target = f"127.0.0.1:{port}"
            channels[channel.name] = grpc_channel_for(
                channel, target, observability.channel_interceptors(),
                observability.channel_call_observer(channel.name))
            opened.append(channels[channel.name].close)
        breakers = {c.name: CircuitBreaker(config.breaker_failure_threshold,
                                           config.breaker_open_ms) for c in config.channels}
        observability.watch_circuit_breakers(breakers)
        router = Router([ChannelRoute(c.name, c.currencies, c.min_amount_minor,
                                      c.max_amount_minor, c.priority, c.timeout_ms)
                         for c in config.channels], breakers)
        in_flight = InFlight()
        # A worker also gives way to its siblings' payments (None alone).
        payments_first = PaymentsFirst(config.batch_yield_to_payments_ms, sibling_payment_counts())
        observability.watch_payments_first(payments_first)
        settlement = ChargeSettlement(channels)
        path = ChargePath(router, channels, settlement)
        completion = PaymentCompletion(store, settlement)
        payments = PaymentService(store, router,
                                  LegDispatcher(path, store),
                                  completion, in_flight, config.max_accepted_payments,
                                  payments_first)
        refunds = RefundService(store, channels, in_flight, payments_first)
        recovery = PaymentRecovery(store, settlement, completion, refunds, in_flight)
        lease = BatchLeaseLimits(config.batch_group_workers, config.batch_lease_ms,
                                 config.batch_lease_renew_every_ms, config.batch_claim_poll_ms,
                                 config.batch_progress_poll_ms)
        # This replica in leases: unique per process, readable in the database.
        replica = worker_supervisor.replica_id()
        group_workers = GroupWorkers(batch_store, storage.group_queue, path, replica,
                                     lease, payments_first)
        batches = BatchService(batch_store, path, in_flight,
                               group_workers, lease)

        # Whatever a crash left unfinished is claimed before new traffic
        # and settled in the background: readiness never waits on a channel.
        # Batches wait for their submitter to resubmit them.
        recovering = await recovery.claim_unfinished(config.recovery_interval_ms)
        opened.append(recovery.stop)  # its settling tasks, before the database closes
        for dead in worker_supervisor.dead_predecessors():
            # A worker started again: the one it replaces has exited.
            log.info("workers.dead_replica_leases_expired", dead_replica=dead,
                     groups=await storage.group_queue.expire_leases_of(dead))
        # A durable queue knows which batches a live replica still streams;
        # a lone server's batches left streaming were all abandoned.
        sweep = storage.group_queue if storage.group_queue.durable else batch_store
        interrupted = await sweep.interrupt_abandoned()
        api_keys = ApiKeyRegistry(config.auth.api_keys)
        consumers = EventConsumers(storage.consumers)
        events = config.events
        retention = EventRetention(storage.pruner, RetentionPolicy(
            events.retention_days * US_PER_DAY, events.prune_interval_ms / 1_000,
            events.prune_chunk_rows))
        load_shedding = LoadShedding(config.max_concurrent_calls,
                                     config.max_concurrent_batch_streams,
                                     config.events.max_watchers)
        cutoff = CallCutoff()
        calls = CallInterceptor(observability.metrics, load_shedding, api_keys, cutoff)
        tls = config.tls
        credentials = None
        if tls.cert_file is not None and tls.key_file is not None:
            credentials = server_credentials(tls.cert_file, tls.key_file, tls.client_ca_file)
        try:
            observability.start_metrics_endpoint()
        except OSError as error:
            raise startup_failure.metrics_port_in_use(
                config.observability.metrics_listen, error) from None
        try:
            running = await start_grpc_server(
                config.listen, PaymentServicer(payments, refunds),
                BatchServicer(batches, observability.observe_batch_event),
                EventServicer(EventQueries(storage.events, consumers), consumers),
                observability.server_interceptors(), credentials, ConnectionPolicy(
                    config.max_connection_age_ms, config.max_connection_age_grace_ms,
                    config.keepalive_time_ms, config.keepalive_timeout_ms,
                    config.keepalive_min_client_ping_interval_ms), config.reuse_port, calls)
        except PortUnavailable:
            raise startup_failure.port_in_use(config.listen, config.reuse_port) from None
        opened.append(functools.partial(running.server.stop, None))
        if api_keys.dev_key_only:
            log.warning("auth.dev_key_only", tenant=DEV_TENANT,
                        hint="no API keys configured: only the documented dev key is accepted")
        app = cls(config, database, running, in_flight, channels, breakers, simulators)
        app.cutoff = cutoff
        app.load_shedding = load_shedding
        app.observability = observability
        app.group_workers = group_workers
        app.recovery = recovery
        await group_workers.start()
        opened.append(functools.partial(group_workers.stop, 0))
        app.recovery_task = asyncio.get_running_loop().create_task(
            recovery.run_periodically(config.recovery_interval_ms))
        app.event_retention = retention
        app.retention_task = asyncio.get_running_loop().create_task(
            retention.run_periodically())
        # Never blocks the start: an unreachable broker is retried in the background.
        app.event_relay = event_relay_for(config, database, storage.events)
        if app.event_relay is not None:
            observability.watch_event_relay(app.event_relay.stats)
            app.event_relay.start()
            opened.append(app.event_relay.stop)
        log.info("server.started", listen=config.listen, port=running.port,
                 metrics_port=observability.metrics_port,
                 database=config.database_shown, recovering_payments=recovering,
                 interrupted_batches=interrupted, replica=replica,
                 channels={name: ch.target for name, ch in channels.items()})
        return app

    async def stop(self) -> None:
        """Graceful: NOT_SERVING first, calls still taken during the drain
        delay, then no new calls and up to the grace period for the ones in
        progress; payments and batch groups (shielded from their calls) run
        to a stored end within the same grace."""
        grace_s = self.config.shutdown_grace_ms / 1_000
        await self.grpc.set_serving(False)
        log.info("server.draining", drain_delay_ms=self.config.shutdown_drain_delay_ms,
                 grace_ms=self.config.shutdown_grace_ms, in_flight=len(self.in_flight))
        await asyncio.sleep(self.config.shutdown_drain_delay_ms / 1_000)
        # One grace for both: calls, then the work they started, never 2x.
        grace_ends = asyncio.get_running_loop().time() + grace_s
        # grpc would cancel what is left at its grace (CANCELLED, or a bare
        # UNAVAILABLE); the cutoff ends those calls first, retryably.
        stopping = asyncio.ensure_future(self.grpc.server.stop(grace_s + CUT_OFF_ANSWER_S))
        await asyncio.wait([stopping], timeout=grace_s)
        if not stopping.done() and self.cutoff is not None:
            log.warning("server.calls_cut_off", calls=self.cutoff.cut(),
                        hint="ended UNAVAILABLE with RetryInfo; their work is resumable")
        await stopping
        await self.in_flight.drain(max(0.0, grace_ends - asyncio.get_running_loop().time()))
        if self.group_workers:
            await self.group_workers.stop(grace_ends - asyncio.get_running_loop().time())
        for task in (self.recovery_task, self.retention_task):
            if task:
                task.cancel()
        if self.retention_task:
            # A pruning chunk in progress ends (or rolls back) before the database closes.
            await asyncio.gather(self.retention_task, return_exceptions=True)
        if self.recovery:
            await self.recovery.stop()  # before the database closes
        if self.event_relay:
            await self.event_relay.stop()
        for channel in self.channels.values():
            await channel.close()
        for server, _ in self.simulators.values():
            if server is not None:
                await server.stop(None)
        await self.database.close()
        if self.observability:
            await self.observability.stop()
        log.info("server.stopped")
