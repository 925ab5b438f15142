"""Chaos for the event log (issue 16): Pays, asynchronous Pays, refunds and a
batch run concurrently while a server is SIGKILLed at seeded points and
restarted; a WatchEvents consumer writes every delivery to a file before
moving its cursor, and a RabbitMQ consumer of the servers' relay (a vhost of
the run's own) writes each message there before acking it. Afterwards both
consumers' deliveries are checked against the server's final state and
ListEvents (tests/support/event_delivery_check.py).

Engines: "sqlite" (one server on a file: every kill takes the whole service
down) or "postgresql" (two replicas on one schema; a seeded one is killed
while the other serves; at even kills the watch is on the replica killed,
and fails over to the other, at odd ones on a replica that stays up). Kill
points are numbers of Pay calls answered, drawn before the run; the calls
are handed out a share at a time, so every kill lands mid-load whatever the
machine's speed. At every second kill the consumers restart too, the watch
from its last saved cursor, the RabbitMQ one with messages unacked (the
duplicates reported). PostgreSQL: at even kills the victim is the relay
leader (the replica whose process last logged event_relay.leading), when it
is one the calls may be lost on; the other replica takes over the lock and
publishes from the saved cursor. Kills are reported by kind.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from tests.support.batch_client import batch_stub
from tests.support.crash_pay_scenario import pay_requests
from tests.support.crash_rig import CrashRig, crash_rigs
from tests.support.event_chaos_load import (BATCH_ID, CALL_TIMEOUT_S, ChaosLoad, batch_messages,
                                            client)
from tests.support.event_chaos_relay import lead_from, leader, relayed_through, victim_of
from tests.support.event_delivery_check import (DeliveryVerdict, FinalState, Payload,
                                                check_deliveries, read_deliveries)
from tests.support.event_rabbitmq_consumer import RabbitConsumer
from tests.support.event_watch_consumer import WatchConsumer
from tests.support.postgres_databases import PostgresDatabases, postgres_rows
from tests.support.rabbitmq import Vhost
from tests.support.server_process import wait_for

CHANNELS = ("card", "wallet")
POLL_S = 0.005
QUIESCENCE_TIMEOUT_S = 180  # generous: the machine is shared; only a broken run waits it out


@dataclass(frozen=True)
class EventChaosConfig:
    engine: str = "sqlite"  # or "postgresql"
    payments: int = 90  # Pay calls; every third asynchronous (PAY_WAIT_ACCEPTED)
    refund_every: int = 2  # of the synchronous payments that succeeded, one in this many
    batch_items: int = 150
    kills: int = 3  # at distinct numbers of answered Pay calls, drawn from the seed
    concurrency: int = 8
    # PostgreSQL: Pays, refunds and the batch go to the replica that is
    # killed too. A payment it leaves PROCESSING is taken over only after
    # HANDOFF_AFTER_MS (90 s): the suite's small run sends them to the other.
    load_on_killed_replica: bool = True
    channel_latency_ms: float = 5.0
    channel_jitter_ms: float = 10.0


@dataclass
class EventChaosRun:
    seed: int
    engine: str
    kill_points: list[int]
    kills: list[str] = field(default_factory=list)  # which replica, when, what it left
    kill_kinds: Counter = field(default_factory=Counter)  # "relay leader", "replica"
    consumer_restarts: int = 0
    sessions: int = 0
    outcomes: Counter = field(default_factory=Counter)  # payments, refunds, batch by status
    verdict: DeliveryVerdict = field(default_factory=DeliveryVerdict)
    problems: list[str] = field(default_factory=list)  # the load's own, not the log's
    load_s: float = 0.0  # until every call was answered
    quiet_s: float = 0.0  # then until no payment was PROCESSING and the final state was read
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.problems

    def describe(self) -> str:
        outcomes = _counts(self.outcomes)
        return "\n".join([
            f"events {self.engine} seed {self.seed}: {self.wall_s:.1f} s (load "
            f"{self.load_s:.1f} s, quiescence {self.quiet_s:.1f} s); kills "
            f"{len(self.kills)} ({_counts(self.kill_kinds)}: {'; '.join(self.kills)}); "
            f"consumer restarts "
            f"{self.consumer_restarts}, connections {self.sessions}",
            f"  outcomes: {outcomes}",
            "  " + self.verdict.describe().replace("\n", "\n  "),
            *(f"  problem: {p}" for p in self.problems[:10])])


def _counts(counts: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


async def run_event_chaos(seed: int, workdir: Path, config: EventChaosConfig) -> EventChaosRun:
    rng = random.Random(seed)
    requests = pay_requests(rng, seed, config.payments)
    for i, request in enumerate(requests):
        if i % 3 == 2:
            request.wait = pb.PAY_WAIT_ACCEPTED
    # One point in each of kills + 1 equal shares of the calls (none in the
    # last); see _kill_at.
    share = max(1, config.payments // (config.kills + 1))
    kill_points = [k * share + rng.randrange(share) + 1 for k in range(config.kills)]
    run = EventChaosRun(seed, config.engine, kill_points)
    started = time.perf_counter()
    behaviour = SimulatorBehaviour(latency_ms=config.channel_latency_ms,
                                   jitter_ms=config.channel_jitter_ms, seed=seed)
    databases = PostgresDatabases()
    vhost = Vhost()
    try:
        dsn = await databases.create() if config.engine == "postgresql" else None
        replicas = 2 if dsn else 1
        workdir.mkdir(parents=True, exist_ok=True)
        broker = RabbitConsumer("rabbitmq", vhost.name, vhost.url, workdir / "deliveries.jsonl")
        await broker.declare()
        async with crash_rigs(workdir, CHANNELS, behaviour, dsn, replicas,
                              relay_url=vhost.url) as rigs:
            await _run(rigs, rng, requests, config, run, broker)
    finally:
        await vhost.close()
        await databases.drop_all()
    run.wall_s = time.perf_counter() - started
    return run


async def _run(rigs: tuple[CrashRig, ...], rng: random.Random, requests: list[pb.PayRequest],
               config: EventChaosConfig, run: EventChaosRun, broker: RabbitConsumer) -> None:
    started = time.perf_counter()
    deliveries = broker.log.path  # one file, each line naming its consumer
    consumer = WatchConsumer("watch", [rig.target for rig in rigs], deliveries)
    watching = asyncio.create_task(consumer.run())
    brokering = asyncio.create_task(broker.run())
    channels = [rig.channel() for rig in rigs]
    # Without load on the killed replica, the last one is killed and the
    # others take the calls.
    spared = len(rigs) > 1 and not config.load_on_killed_replica
    victims = [len(rigs) - 1] if spared else list(range(len(rigs)))
    try:
        await lead_from(rigs, victims)
        load = ChaosLoad(channels[:-1] if spared else channels, random.Random(rng.random()),
                         run.outcomes)
        todo: asyncio.Queue = asyncio.Queue()
        calls = [(request, i % 3 != 2 and i % config.refund_every == 0)
                 for i, request in enumerate(requests)]
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_kill_at(rigs, victims, load, (consumer, broker), rng, run, todo,
                                       calls, config.concurrency))
            tasks.create_task(load.batch(batch_messages(config.batch_items)))
            for _ in range(config.concurrency):
                tasks.create_task(client(load, todo))
        run.load_s = time.perf_counter() - started
        # A channel of its own: one to a server that was killed may still be
        # waiting out its reconnect backoff (UNAVAILABLE at once).
        async with rigs[0].channel() as reader:
            finals = await _quiescent_final_states(load, reader, run)
            listed = await _listed_seqs(ev_grpc.EventServiceStub(reader))
        run.quiet_s = time.perf_counter() - started - run.load_s
        if (payments := sum(n for k, n in run.outcomes.items() if k.startswith("payment "))) \
                != len(requests):
            run.problems.append(f"{payments} payments stored for {len(requests)} Pay requests")
        high = max(listed, default=0)
        await wait_for(lambda: consumer.cursor >= high, f"the consumer at seq {high}",
                       QUIESCENCE_TIMEOUT_S)
        await relayed_through(rigs[0], broker, high)
    finally:
        for task in (watching, brokering):
            task.cancel()
        await asyncio.gather(watching, brokering, return_exceptions=True)
        for channel in channels:
            await channel.close()
    run.consumer_restarts = consumer.restarts + broker.restarts
    run.sessions = consumer.sessions
    run.verdict = check_deliveries(read_deliveries(deliveries), finals, listed)


async def _kill_at(rigs: tuple[CrashRig, ...], victims: Sequence[int], load: ChaosLoad,
                   consumers: tuple[WatchConsumer, RabbitConsumer], rng: random.Random,
                   run: EventChaosRun, todo: asyncio.Queue, calls: list, clients: int) -> None:
    """Hands the calls to the clients a share at a time, the next share only
    after the kill in this one, so every kill point is reached with calls
    still running, however fast the machine. At each point: SIGKILL a seeded
    victim (the only server on SQLite), at every second one restart the
    consumer too (so a run has both: a watch resumed from its live cursor,
    and a consumer back from its saved one), then restart the server."""
    share = max(1, len(calls) // (len(run.kill_points) + 1))
    shares = [calls[k * share:(k + 1) * share] for k in range(len(run.kill_points))]
    shares.append(calls[len(run.kill_points) * share:])
    consumer, broker = consumers
    victim = victim_of(rigs, victims, rng, 0)
    consumer.attach(victim)
    for call in shares[0]:
        todo.put_nowait(call)
    for k, point in enumerate(run.kill_points):
        while load.answered < point:
            await asyncio.sleep(POLL_S)
        kind = "relay leader" if rigs[victim].relay_leading() else "replica"
        rigs[victim].kill()
        answered = load.answered
        left = await asyncio.to_thread(_processing, rigs[victim])  # the simulators share the loop
        run.kills.append(f"{kind} {victim} at {answered} answered, {left} PROCESSING")
        run.kill_kinds[kind] += 1
        load.batch_released.set()  # the batch's stream was open at the first kill
        if k % 2 == 1:
            consumer.restart()
            broker.restart()
        delivered = consumer.delivered
        await rigs[victim].restart()
        await leader(rigs)  # taken over (PostgreSQL), or back (SQLite)
        victim = victim_of(rigs, victims, rng, k + 1)
        # PostgreSQL: the watch is on the next victim at even kills (it
        # fails over to the other replica), on a replica that stays up at odd ones.
        consumer.attach(victim if k % 2 == 1 or len(rigs) == 1
                        else (victim + 1) % len(rigs))
        for call in shares[k + 1]:
            todo.put_nowait(call)
        # The next share writes events: before the next kill, the watch
        # must have resumed and delivered one (else a kill could find it
        # still backing off, and the resume would go untested).
        await wait_for(lambda: consumer.delivered > delivered, "the watch resumed",
                       QUIESCENCE_TIMEOUT_S)
    load.batch_released.set()
    for _ in range(clients):
        todo.put_nowait(None)  # no more calls


def _processing(rig: CrashRig) -> int:
    """Payments stored PROCESSING: a kill left them for recovery (on
    PostgreSQL, some may be the live replica's, still running)."""
    if isinstance(rig.database, Path):
        return rig.count_by_status("payments").get("PROCESSING", 0)
    return postgres_rows(str(rig.database),
                         "SELECT count(*) FROM payments WHERE status = 'PROCESSING'")[0][0]


async def _quiescent_final_states(load: ChaosLoad, channel: grpc.aio.Channel,
                                  run: EventChaosRun) -> list[FinalState]:
    """Once no payment is PROCESSING (recovery ran at each restart and
    finishes what a kill left; accepted payments finish on their own): every
    payment as GetPayment reads it, the refunded ones' last event being their
    refund (read by the same-key RefundPayment, which answers the stored one),
    and the batch as GetBatch reads it."""
    stub = pb_grpc.PaymentServiceStub(channel)
    listed: list[pb.Payment] = []

    async def none_processing() -> bool:
        listed[:] = await _all_payments(stub)
        return all(p.status != pb.PAYMENT_STATUS_PROCESSING for p in listed)

    deadline = time.monotonic() + QUIESCENCE_TIMEOUT_S
    while not await none_processing():
        assert time.monotonic() < deadline, "payments still PROCESSING"
        await asyncio.sleep(0.1)
    finals = []
    for listed_payment in listed:
        payment = (await stub.GetPayment(pb.GetPaymentRequest(
            payment_id=listed_payment.payment_id), timeout=CALL_TIMEOUT_S)).payment
        run.outcomes["payment " + pb.PaymentStatus.Name(payment.status)
                     .removeprefix("PAYMENT_STATUS_")] += 1
        last = payment
        if payment.payment_id in load.refunds:
            last = await load.refund(payment.payment_id, load.refunds[payment.payment_id])
            run.outcomes["refund " + pb.RefundStatus.Name(last.status)
                         .removeprefix("REFUND_STATUS_")] += 1
        finals.append(FinalState(("payment", payment.payment_id), payment.version,
                                 Payload.of(last)))
    batch = (await batch_stub(channel).GetBatch(batch_pb.GetBatchRequest(batch_id=BATCH_ID),
                                                timeout=CALL_TIMEOUT_S)).batch
    finals.append(FinalState(("batch", BATCH_ID), batch.version, Payload.of(batch)))
    return finals


async def _all_payments(stub: pb_grpc.PaymentServiceStub) -> list[pb.Payment]:
    found, token = [], ""
    while True:
        page = await stub.ListPayments(pb.ListPaymentsRequest(page_size=100, page_token=token),
                                       timeout=CALL_TIMEOUT_S)
        found += page.payments
        if not (token := page.next_page_token):
            return found


async def _listed_seqs(stub: ev_grpc.EventServiceStub) -> dict[int, str]:
    """seq -> event_id of every event of the tenant, ListEvents from 0."""
    listed, cursor = {}, 0
    while True:
        page = await stub.ListEvents(ev.ListEventsRequest(after_cursor=cursor, page_size=1000),
                                     timeout=CALL_TIMEOUT_S)
        if not page.events:
            return listed
        listed.update((event.seq, event.event_id) for event in page.events)
        cursor = page.next_cursor
