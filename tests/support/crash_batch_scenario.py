"""Crash scenario for batches: SIGKILL the server mid-batch, restart,
resubmit the same batch, again, until it completes; then the channels'
ledgers must equal what paygrid stored, item by item.

Kill points are drawn from the seed before the run, so a run can be
repeated: `groups:N` kills the server when the client has read N group
results of that submission (the client is then still sending: items are
stored, grouped, charged and told as they stream in); `sent:N` when gRPC has
taken the first N request messages (the header is message 1). gRPC buffers
megabytes ahead of the server, so `sent:N` is an early kill: the header
may not even be stored. One run kills 1 to `max_kills` times, then
resubmits without a kill. A quarter of the restarts are themselves killed
a seeded 0 to 2 s after they were spawned (while loading or recovering).

With `workers` > 1 (`serve --workers N` on a fresh PostgreSQL schema) a kill
is the stream's worker's (every worker's before the batch is stored); the
others charge on, and the restarted worker expires the dead one's leases,
so the batch reads INTERRUPTED and a resubmission is taken at once.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from tests.support.batch_client import BatchReply, batch_stub, chunk, header
from tests.support.batch_counts_check import assert_counts_match_items
from paygrid_server.ledger_reconciliation import reconcile
from tests.support.crash_rig import CrashRig, crash_rig
from tests.support.exactly_once import CrashRunVerdict, count_batch
from tests.support.postgres_databases import PostgresDatabases

BATCH_ID = "crash-batch"
CHANNELS = ("card", "wallet")
SUBMISSION_TIMEOUT_S = 1_800  # a whole 100k-item submission on a busy machine
FINAL_STATUSES = {"SUCCEEDED", "FAILED", "REJECTED"}


@dataclass(frozen=True)
class BatchCrashConfig:
    items: int = 3_000
    per_message: int = 500
    max_group_size: int = 50
    parallelism: int = 4
    max_kills: int = 3
    channel_latency_ms: float = 2.0
    channel_jitter_ms: float = 3.0
    workers: int = 1  # more than 1: serve --workers N
    engine: str = "postgresql"  # with workers: "sqlite" (one file) or "postgresql" (a schema)


@dataclass(frozen=True)
class KillPoint:
    after: str  # "sent" (request messages taken by gRPC) or "groups" (group results read)
    count: int
    restart_killed_after_ms: int | None = None  # the restart that follows is killed too

    def __str__(self) -> str:
        again = self.restart_killed_after_ms
        return f"{self.after}:{self.count}" + ("" if again is None else
                                               f", restart killed at {again} ms")


@dataclass
class BatchKill:
    point: KillPoint
    sent: int  # request messages gRPC had taken
    messages: int
    # batch_items by status as the killed server left them: PROCESSING were
    # mid-charge, RECEIVED stored but not yet charged.
    left_by_status: dict[str, int]

    def __str__(self) -> str:
        left = self.left_by_status
        final = sum(n for status, n in left.items() if status in FINAL_STATUSES)
        return (f"{self.point} (sent {self.sent}/{self.messages}, "
                f"stored {sum(left.values()):,}: final {final:,}, "
                f"mid-charge {left.get('PROCESSING', 0):,}, "
                f"waiting {left.get('RECEIVED', 0) + left.get('UNKNOWN', 0):,})")


@dataclass
class BatchCrashRun(CrashRunVerdict):
    seed: int
    items: int
    planned: list[KillPoint]
    kills: list[BatchKill] = field(default_factory=list)
    submissions: int = 0

    @property
    def kill_count(self) -> int:
        """SIGKILLs, the ones of restarts included."""
        return len(self.kills) + sum(k.point.restart_killed_after_ms is not None
                                     for k in self.kills)

    def describe(self) -> str:
        lines = [f"batch seed {self.seed}: {self.items:,} items, {self.submissions} submissions, "
                 f"{self.wall_s:.1f} s; kills: " + "; ".join(map(str, self.kills))]
        return "\n".join(lines + self.verdict_lines())


def batch_transactions(items: int) -> list[pb.BatchTransaction]:
    """Every payee distinct, so the channel's record names its item; one in
    97 is declined by the channel; a third named to the second channel, a
    fifth in USD, so several groups fill at once."""
    transactions = []
    for i in range(items):
        payee = (f"decline_insufficient_funds_{i:07d}" if i % 97 == 13
                 else f"employee_{i:07d}")
        transactions.append(pb.BatchTransaction(
            reference=f"item-{i:07d}", payee=payee,
            amount=money_pb2.Money(currency="USD" if i % 5 == 0 else "EUR",
                                   amount_minor=100 + (i * 7_919) % 250_000),
            channel=CHANNELS[1] if i % 3 == 0 else ""))
    return transactions


def plan_kills(rng: random.Random, config: BatchCrashConfig, messages: int) -> list[KillPoint]:
    """Points every one of which a submission reaches before it can finish:
    each `groups` count stays within its share of the batch's groups."""
    kills = rng.randint(1, config.max_kills)
    groups_share = max(1, math.ceil(config.items / config.max_group_size) // (kills + 1))
    points = [KillPoint("groups", rng.randint(1, groups_share)) if rng.random() < 0.75
              else KillPoint("sent", rng.randint(1, messages)) for _ in range(kills)]
    # Drawn after the points, so the points of a seed stay what they were
    # before restarts were killed too.
    return [replace(point, restart_killed_after_ms=rng.randint(0, 2_000))
            if rng.random() < 0.25 else point for point in points]


async def run_batch_crash(seed: int, workdir: Path, config: BatchCrashConfig) -> BatchCrashRun:
    rng = random.Random(seed)
    transactions = batch_transactions(config.items)
    messages = [header(BATCH_ID, payer="acct_payroll_crash", max_group_size=config.max_group_size,
                       parallelism=config.parallelism),
                *(chunk(*transactions[i:i + config.per_message])
                  for i in range(0, config.items, config.per_message))]
    run = BatchCrashRun(seed, config.items, plan_kills(rng, config, len(messages)))
    started = time.perf_counter()
    behaviour = SimulatorBehaviour(latency_ms=config.channel_latency_ms,
                                   jitter_ms=config.channel_jitter_ms, seed=seed)
    databases = PostgresDatabases()
    dsn = (await databases.create()
           if config.workers > 1 and config.engine == "postgresql" else None)
    try:
        return await _run_with(run, transactions, messages, workdir, behaviour, config, dsn,
                               started)
    finally:
        await databases.drop_all()


async def _run_with(run: BatchCrashRun, transactions: list[pb.BatchTransaction],
                    messages: list[pb.SubmitBatchRequest], workdir: Path,
                    behaviour: SimulatorBehaviour, config: BatchCrashConfig, dsn: str | None,
                    started: float) -> BatchCrashRun:
    async with crash_rig(workdir, CHANNELS, behaviour, config.workers, dsn) as rig:
        reply = None
        for point in [*run.planned, None]:
            run.submissions += 1
            reply, sent = await _submit(rig, messages, point)
            if reply is not None:
                break  # ran to its end (before its kill point, if it had one)
            run.kills.append(BatchKill(point, sent, len(messages),
                                       rig.count_by_status("batch_items")))
            await rig.restart(point.restart_killed_after_ms)
            await _check_interrupted(rig, run)
            _check_counts(rig, batches=None)  # a kill may come before the batch is stored
        assert reply is not None  # the loop ends with a submission that ran to its end
        _check_final_reply(reply, transactions, run)
        _check_counts(rig, batches=1)
        run.exactly_once = count_batch(transactions, reply.results, rig.ledgers)
        run.books = reconcile(rig.rows, rig.ledgers)
        run.count_voids(rig.ledgers)
    run.wall_s = time.perf_counter() - started
    return run


def _check_counts(rig: CrashRig, batches: int | None) -> None:
    """A SQLite file's kept item counts equal its items counted, after
    every kill and takeover (storage/sqlite/batch_item_counts.py)."""
    if isinstance(rig.database, Path):
        checked = assert_counts_match_items(rig.database)
        assert batches is None or checked == batches


async def _submit(rig: CrashRig, messages: list[pb.SubmitBatchRequest],
                  kill: KillPoint | None) -> tuple[BatchReply | None, int]:
    """One submission; kills the server at `kill`. The reply when it ran to
    its end (None when it was killed), and how many messages gRPC took."""
    kills_before = rig.kills
    sent = 0

    def reached(after: str, count: int) -> bool:
        if kill is not None and kill.after == after and count >= kill.count \
                and rig.kills == kills_before:
            rig.kill(stream_of=BATCH_ID)
        return rig.kills != kills_before

    async def requests():
        nonlocal sent
        for message in messages:
            yield message
            sent += 1
            if reached("sent", sent):
                return

    reply = BatchReply()
    async with rig.channel() as channel:
        call = batch_stub(channel).SubmitBatch(requests(), timeout=SUBMISSION_TIMEOUT_S)
        try:
            async for response in call:
                kind = response.WhichOneof("kind")
                if kind == "group":
                    reply.groups.append(response.group)
                    if reached("groups", len(reply.groups)):
                        break
                elif kind == "summary":
                    reply.summary = response.summary
                else:
                    getattr(reply, kind).extend(getattr(response, kind).items)
        except grpc.aio.AioRpcError:
            if rig.kills == kills_before:
                raise
        call.cancel()
    return (None if rig.kills != kills_before else reply), sent


async def _check_interrupted(rig: CrashRig, run: BatchCrashRun) -> None:
    """After the restart a killed batch reads INTERRUPTED; unknown only if
    nothing of it was stored, COMPLETED only if every item was final."""
    left = run.kills[-1].left_by_status
    async with rig.channel() as channel:
        try:
            got = await batch_stub(channel).GetBatch(pb.GetBatchRequest(batch_id=BATCH_ID),
                                                     timeout=30)
            status = pb.BatchStatus.Name(got.batch.status).removeprefix("BATCH_STATUS_")
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            status = "NOT_FOUND"
    all_final = sum(left.values()) == run.items and set(left) <= FINAL_STATUSES
    # Workers: a batch stored but not yet started by any stream stays
    # RECEIVING for the replicas' grace (UNSTARTED_GRACE_US), as then
    # nothing tells it from one a live replica is starting.
    unstarted = rig.workers > 1 and status == "RECEIVING" and not left
    if not (status == "INTERRUPTED" or (status == "NOT_FOUND" and not left)
            or (status == "COMPLETED" and all_final) or unstarted):
        run.problems.append(f"after kill {len(run.kills)} the batch reads {status}, "
                            f"with items left {left}")


def _check_final_reply(reply: BatchReply, transactions: list[pb.BatchTransaction],
                       run: BatchCrashRun) -> None:
    summary = reply.summary
    if summary is None or summary.status != pb.BATCH_STATUS_COMPLETED:
        run.problems.append(f"the last submission did not complete: {summary}")
        return
    counts = summary.counts
    if (counts.total, counts.pending, counts.rejected) != (run.items, 0, 0):
        run.problems.append(f"final counts {counts}")
    if reply.rejected:
        run.problems.append(f"{len(reply.rejected)} items rejected, e.g. {reply.rejected[0]}")
    # The last submission tells each item once: by its group, or as already processed.
    reported = reply.reported
    if sorted(reported) != sorted(tx.reference for tx in transactions):
        twice = len(reported) - len(set(reported))
        missing = len({tx.reference for tx in transactions} - set(reported))
        run.problems.append(f"the last submission told {len(reported):,} results "
                            f"({twice} twice, {missing} items never)")
