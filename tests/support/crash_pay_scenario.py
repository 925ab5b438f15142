"""Crash scenario for real-time payments: many concurrent Pay calls, the
server SIGKILLed at seeded points, restarted; every client retries its call
with the same idempotency key until it gets a final answer. Then every
stored payment's legs must equal the channels' ledgers.

Payments are drawn from the seed: 1 to 3 legs, either mode, some legs
declined by the channel (`decline_` payees), some flaky (`flaky_`: the first
Charge fails UNAVAILABLE), some naming their channel. Kill points
(`answered:N`: when N calls have had their final answer) are drawn before
the run, distinct and below the number of payments; one is skipped only if
the clients were all answered while the server was restarting. A quarter of
the restarts are themselves killed a seeded 0 to 2 s after they were spawned,
which can catch the server resolving the payments the last kill left.

With `workers` > 1 the server is `serve --workers N` on a fresh PostgreSQL
schema (or, with engine "sqlite", on one SQLite file), each client on a connection of its own (so every worker has calls
in flight), and a kill is one worker's: its payments are taken over by the
replica hand-off (HANDOFF_AFTER_MS), so each kill costs about 90 s.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from paygrid_server.ledger_reconciliation import reconcile
from tests.support.crash_rig import CrashRig, crash_rig
from tests.support.exactly_once import CrashRunVerdict, count_payments
from tests.support.postgres_databases import PostgresDatabases

CHANNELS = ("card", "wallet")
CALL_TIMEOUT_S = 60
RETRY_DELAY_S = 0.05
POLL_S = 0.005
# What a client retries with the same key: the server is down or restarting,
# the first call still runs, or it is shedding load.
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class PayCrashConfig:
    payments: int = 300
    concurrency: int = 32  # calls in flight
    max_kills: int = 3
    channel_latency_ms: float = 5.0
    channel_jitter_ms: float = 10.0
    workers: int = 1  # more than 1: serve --workers N
    engine: str = "postgresql"  # with workers: "sqlite" (one file) or "postgresql" (a schema)


@dataclass(frozen=True)
class PlannedKill:
    answered: int  # when the clients have this many final answers
    restart_killed_after_ms: int | None = None  # the restart that follows is killed too


@dataclass
class PayKill:
    planned: PlannedKill
    answered: int  # final answers the clients had when the server was killed
    # payments by status as the killed server left them: PROCESSING ones
    # are resolved by the restarted server before it serves again.
    left_by_status: dict[str, int]

    def __str__(self) -> str:
        again = self.planned.restart_killed_after_ms
        return (f"answered:{self.answered} (stored {sum(self.left_by_status.values()):,}, "
                f"in flight {self.left_by_status.get('PROCESSING', 0):,})"
                + ("" if again is None else f", restart killed at {again} ms"))


@dataclass
class PayCrashRun(CrashRunVerdict):
    seed: int
    payments: int
    planned: list[PlannedKill]
    legs: int = 0
    kills: list[PayKill] = field(default_factory=list)
    attempts: int = 0  # Pay calls made, retries included
    errors_retried: Counter = field(default_factory=Counter)  # by gRPC code
    outcomes: Counter = field(default_factory=Counter)  # final payment statuses
    interrupted_legs: int = 0  # legs a crash failed before the channel charged them

    @property
    def kill_count(self) -> int:
        """SIGKILLs, the ones of restarts included."""
        return len(self.kills) + sum(k.planned.restart_killed_after_ms is not None
                                     for k in self.kills)

    def describe(self) -> str:
        outcomes = ", ".join(f"{pb.PaymentStatus.Name(s).removeprefix('PAYMENT_STATUS_')} {n}"
                             for s, n in sorted(self.outcomes.items()))
        retried = ", ".join(f"{code} {n}" for code, n in sorted(self.errors_retried.items()))
        lines = [f"pay seed {self.seed}: {self.payments:,} payments ({self.legs:,} legs), "
                 f"{self.attempts:,} calls, {self.wall_s:.1f} s; kills: "
                 + "; ".join(map(str, self.kills)),
                 f"  outcomes: {outcomes}; legs interrupted by a crash {self.interrupted_legs}; "
                 f"retried: {retried or 'none'}"]
        return "\n".join(lines + self.verdict_lines())


def pay_requests(rng: random.Random, seed: int, payments: int) -> list[pb.PayRequest]:
    requests = []
    for i in range(payments):
        legs = []
        for index in range(rng.randint(1, 3)):
            kind = rng.random()
            payee = ("decline_card_declined" if kind < 0.08
                     else f"flaky_{i:06d}_{index}" if kind < 0.13
                     else f"payee_{i:06d}_{index}")
            legs.append(pb.PayLeg(
                payee=payee, channel=rng.choice(("", "", *CHANNELS)),
                amount=money_pb2.Money(currency=rng.choice(("EUR", "USD")),
                                       amount_minor=rng.randint(1, 100_000))))
        requests.append(pb.PayRequest(
            idempotency_key=f"crash-{seed}-{i:06d}", payer=f"acct_{seed:04d}_{i:06d}",
            legs=legs, mode=rng.choice((pb.PAYMENT_MODE_ALL_OR_NOTHING,
                                        pb.PAYMENT_MODE_INDEPENDENT))))
    return requests


def plan_kills(rng: random.Random, config: PayCrashConfig) -> list[PlannedKill]:
    kills = min(rng.randint(1, config.max_kills), config.payments - 1)
    thresholds = sorted(rng.sample(range(1, config.payments), kills))
    return [PlannedKill(n, rng.randint(0, 2_000) if rng.random() < 0.25 else None)
            for n in thresholds]


async def run_pay_crash(seed: int, workdir: Path, config: PayCrashConfig) -> PayCrashRun:
    rng = random.Random(seed)
    requests = pay_requests(rng, seed, config.payments)
    run = PayCrashRun(seed, config.payments, plan_kills(rng, config),
                      legs=sum(len(r.legs) for r in requests))
    started = time.perf_counter()
    behaviour = SimulatorBehaviour(latency_ms=config.channel_latency_ms,
                                   jitter_ms=config.channel_jitter_ms, seed=seed)
    databases = PostgresDatabases()
    dsn = (await databases.create()
           if config.workers > 1 and config.engine == "postgresql" else None)
    try:
        async with crash_rig(workdir, CHANNELS, behaviour, config.workers, dsn) as rig:
            answers: dict[str, pb.Payment] = {}
            # One connection for all clients; with workers, one each.
            channels = [rig.channel() for _ in range(
                config.concurrency if config.workers > 1 else 1)]
            try:
                stubs = [pb_grpc.PaymentServiceStub(channel) for channel in channels]
                todo: asyncio.Queue = asyncio.Queue()
                for request in requests:
                    todo.put_nowait(request)
                clients_done = asyncio.Event()
                killer = asyncio.create_task(_kill_at(rig, run, answers, clients_done))
                try:
                    await asyncio.gather(*(_client(stubs[c % len(stubs)], todo, answers, run)
                                           for c in range(config.concurrency)))
                finally:
                    clients_done.set()
                    await killer  # it may be restarting the server: let it finish
                stored = await _stored_payments(stubs[0], answers, run)
            finally:
                for channel in channels:
                    await channel.close()
            _check_against_requests(requests, answers, stored, run)
            run.exactly_once = count_payments(answers.values(), rig.ledgers)
            run.books = reconcile(rig.rows, rig.ledgers)
            run.count_voids(rig.ledgers)
    finally:
        await databases.drop_all()
    run.wall_s = time.perf_counter() - started
    return run


async def _kill_at(rig: CrashRig, run: PayCrashRun, answers: dict[str, pb.Payment],
                   clients_done: asyncio.Event) -> None:
    answered_at_restart = 0
    for planned in run.planned:
        # Clients are answered while the restart is noticed: a kill point
        # passed meanwhile waits for one more answer, so it never hits an
        # idle server after the last call.
        while len(answers) < max(planned.answered, answered_at_restart + 1):
            if clients_done.is_set():
                return  # every call answered (or given up): no more kills
            await asyncio.sleep(POLL_S)
        if len(answers) == run.payments:
            return
        answered = len(answers)
        rig.kill()
        run.kills.append(PayKill(planned, answered, rig.count_by_status("payments")))
        await rig.restart(planned.restart_killed_after_ms)
        answered_at_restart = len(answers)


async def _client(stub: pb_grpc.PaymentServiceStub, todo: asyncio.Queue,
                  answers: dict[str, pb.Payment], run: PayCrashRun) -> None:
    """Takes requests until none are left; retries each with the same key
    until its payment is final."""
    while not todo.empty():
        request = todo.get_nowait()
        while True:
            run.attempts += 1
            try:
                payment = (await stub.Pay(request, timeout=CALL_TIMEOUT_S)).payment
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    run.problems.append(f"{request.idempotency_key}: {error.code().name} "
                                        f"{error.details()}")
                    break
                run.errors_retried[error.code().name] += 1
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if payment.status != pb.PAYMENT_STATUS_PROCESSING:
                answers[request.idempotency_key] = payment
                break
            await asyncio.sleep(RETRY_DELAY_S)  # still resolving: ask again, same key


async def _stored_payments(stub: pb_grpc.PaymentServiceStub, answers: dict[str, pb.Payment],
                           run: PayCrashRun) -> dict[str, pb.Payment]:
    """Every payment as paygrid stored it, read back once all calls are done;
    the list of all payments must hold exactly the answered ones."""
    listed: dict[str, pb.Payment] = {}
    token = ""
    while True:
        page = await stub.ListPayments(pb.ListPaymentsRequest(page_size=100, page_token=token),
                                       timeout=CALL_TIMEOUT_S)
        listed.update((p.payment_id, p) for p in page.payments)
        if not (token := page.next_page_token):
            break
    answered_ids = {p.payment_id for p in answers.values()}
    if set(listed) != answered_ids:
        run.problems.append(f"{len(set(listed) - answered_ids)} stored payments no client was "
                            f"answered with; {len(answered_ids - set(listed))} answers not stored")
    return listed


def _check_against_requests(requests: list[pb.PayRequest], answers: dict[str, pb.Payment],
                            stored: dict[str, pb.Payment], run: PayCrashRun) -> None:
    """Each final answer is what was stored, for the legs that were asked."""
    for request in requests:
        answer = answers.get(request.idempotency_key)
        if answer is None:
            run.problems.append(f"{request.idempotency_key}: no final answer")
            continue
        payment = stored.get(answer.payment_id)
        if payment is None:
            continue  # counted by _stored_payments
        run.outcomes[payment.status] += 1
        if (payment.status, [l.status for l in payment.legs]) != \
                (answer.status, [l.status for l in answer.legs]):
            run.problems.append(f"{answer.payment_id}: answered {answer.status}, stored "
                                f"{payment.status}")
        asked = [(l.payee, l.amount.currency, l.amount.amount_minor) for l in request.legs]
        kept = [(l.payee, l.amount.currency, l.amount.amount_minor) for l in payment.legs]
        if asked != kept or payment.idempotency_key != request.idempotency_key:
            run.problems.append(f"{answer.payment_id}: stored legs {kept}, asked {asked}")
        run.interrupted_legs += sum(l.failure.reason == "INTERRUPTED" for l in payment.legs)
