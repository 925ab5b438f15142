"""One batch shared by several server processes: its groups are work units
any replica claims (leases in the database), whichever replica's stream
formed them. Kill a replica mid-batch and the others take its groups over
once its leases expire: the channel's ledger must equal paygrid's records,
no item lost, none charged twice, every group done once.

The servers are real OS processes (tests/support/server_process.py) on one
PostgreSQL schema; the channel simulator runs in this process as the one
remote channel they all call, so its ledger is the channel's whole record.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
import pytest

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.config import ConfigError, load_config
from paygrid_server.simulator.channel_ledger import ChannelLedger
from paygrid_server.simulator.channel_simulator import (ChannelSimulator, SimulatorBehaviour,
                                                        start_simulator)
from paygrid_server.ledger_reconciliation import reconcile, sqlite_rows
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit
from tests.conftest import rich_status
from tests.support.exactly_once import count_batch
from tests.support.postgres_databases import postgres_rows
from tests.support.server_process import ServerProcess, free_port, wait_for, write_config

ITEMS = 4_000  # at most: the last 1,000 are sent once the test has done its part
PER_MESSAGE = 500
GROUP_SIZE = 25  # 120 groups
PARALLELISM = 12  # over all replicas: 4 each while 3 are alive
# Leases short, so a dead replica's groups are taken over within the test,
# yet long enough that a live replica on a loaded machine keeps its own;
# polls short, so idle replicas claim soon after a group is queued.
LEASES = dict(batch_lease_ms=4_000, batch_lease_renew_every_ms=400, batch_claim_poll_ms=50,
              batch_progress_poll_ms=50)
# Which replica holds what mid-charge is made by holding its charges at the
# channel (hold_charges), never by timing: the latency only keeps groups
# overlapping, as they would in production.
CHANNEL_LATENCY_MS = 20


def _transactions(items: int) -> list[pb.BatchTransaction]:
    """Payees distinct (the channel's record names its item); one in 97 declined."""
    return [pb.BatchTransaction(
        reference=f"item-{i:05d}",
        payee=f"decline_insufficient_funds_{i:05d}" if i % 97 == 13 else f"employee_{i:05d}",
        amount=money_pb2.Money(currency="USD" if i % 5 == 0 else "EUR",
                               amount_minor=100 + i % 5_000)) for i in range(items)]


def _messages(batch_id: str, transactions: list[pb.BatchTransaction]) -> list:
    return [header(batch_id, payer="acct_payroll_0001", max_group_size=GROUP_SIZE,
                   parallelism=PARALLELISM),
            *(chunk(*transactions[i:i + PER_MESSAGE])
              for i in range(0, len(transactions), PER_MESSAGE))]


class Feed:
    """A batch stream fed a chunk at a time, as fast as the server takes
    them (it slows the feed when its groups back up), holding back the last
    `reserve` transactions until send_the_rest(): so the batch is still
    running, whatever the machine's load, while a test does what it must
    mid-batch."""

    CHUNK_ITEMS = 100

    def __init__(self, stub, batch_id: str, transactions: list, reserve: int) -> None:
        # One message waits at most: put() returns once the stream took the last.
        self._outgoing: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.call = stub.SubmitBatch(self._requests(), timeout=180)
        self.sent: list[pb.BatchTransaction] = []
        self._finishing = asyncio.Event()
        self._feeding = asyncio.ensure_future(self._feed(batch_id, transactions, reserve))

    async def _requests(self):
        while (message := await self._outgoing.get()) is not None:
            yield message

    async def _feed(self, batch_id: str, transactions: list, reserve: int) -> None:
        await self._outgoing.put(_messages(batch_id, [])[0])
        for start in range(0, len(transactions), self.CHUNK_ITEMS):
            if start >= len(transactions) - reserve:
                await self._finishing.wait()
            part = transactions[start:start + self.CHUNK_ITEMS]
            self.sent += part
            await self._outgoing.put(chunk(*part))
        await self._outgoing.put(None)

    def send_the_rest(self) -> None:
        self._finishing.set()

    async def finish(self):
        self.send_the_rest()
        await self._feeding
        return await collect(self.call)


class Replica:
    def __init__(self, tmp_path: Path, name: str, database: str, sim_port: int,
                 **server: int) -> None:
        self.name = name
        self.port = free_port()
        config = write_config(tmp_path / f"{name}.toml", self.port, database,  # type: ignore[arg-type]
                              {"card": sim_port}, **server)
        if not str(database).endswith(".sqlite3"):
            # Several servers (and other tests) share PostgreSQL's connections.
            config.write_text(config.read_text() + "[postgres]\npool_max_connections = 5\n")
        self.process = ServerProcess(config, tmp_path / f"{name}.log")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def owns(self, owner: str | None) -> bool:
        """Whether a lease owner (host:pid:nonce) is this replica."""
        return owner is not None and owner.split(":")[-2] == str(self.pid)


class Channel:
    """The one remote channel the replicas call: one ledger (its whole
    record), one simulator server per replica in front of it, so a test can
    hold one replica's charges at the channel while the others' go on."""

    def __init__(self) -> None:
        self.ledger = ChannelLedger("card")
        self.servers: list[grpc.aio.Server] = []

    async def front(self, seed: int) -> tuple[ChannelSimulator, int]:
        server, simulator, port = await start_simulator(
            "card", SimulatorBehaviour(latency_ms=CHANNEL_LATENCY_MS, jitter_ms=10, seed=seed),
            ledger=self.ledger)
        self.servers.append(server)
        return simulator, port

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop(None)


@pytest.mark.postgresql_only
async def test_three_replicas_share_a_batch_and_finish_a_killed_ones_groups(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    card = Channel()
    (card_a, port_a), (card_b, port_b), (card_c, port_c) = [
        await card.front(seed) for seed in (7, 8, 9)]
    # B finishes two groups, then its charges stop at the channel: it then
    # provably holds groups mid-charge, whatever the machine's load.
    card_b.faults.hold_charges(after_calls=2)
    dsn = await postgres_databases.create()
    a, b, c = (Replica(tmp_path, name, dsn, port, **LEASES)
               for name, port in (("a", port_a), ("b", port_b), ("c", port_c)))
    watch = None
    try:
        await asyncio.gather(a.process.start(a.port), b.process.start(b.port))
        watch = await asyncpg.connect(dsn)

        batch_statuses: set[str] = set()

        async def groups() -> list[asyncpg.Record]:
            batch_statuses.update(r[0] for r in await watch.fetch("SELECT status FROM batches"))
            return await watch.fetch("SELECT group_no, status, lease_owner, lease_count, "
                                     "processed_by FROM batch_groups ORDER BY group_no")

        async with keyed_channel(a.target) as ch_a, keyed_channel(c.target) as ch_c:
            feed = Feed(batch_stub(ch_a), "payroll", _transactions(ITEMS), reserve=1_000)
            await _until(lambda rows: any(r["status"] == "DONE" for r in rows), groups,
                         "the first group done")

            # A replica starting mid-batch leaves the live batch alone...
            await c.process.start(c.port)
            await groups()
            # ...and refuses a second stream of it while A's runs.
            # Only the header is sent: a refusal answered while the client is
            # still writing can reach it as INTERNAL ("Failed execute_batch").
            second, outgoing = open_stream(batch_stub(ch_c), timeout=30)
            await outgoing.put(_messages("payroll", [])[0])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await collect(second)
            assert refused.value.code() == grpc.StatusCode.ABORTED, refused.value.details()
            assert "RetryInfo" in rich_status(refused.value)

            # B holds a group at the channel (held: it cannot finish it) and
            # has stored the two groups the channel let through.
            await asyncio.wait_for(card_b.faults.held(1), 60)
            rows = await _until(lambda rows: sum(b.owns(r["processed_by"]) for r in rows) >= 2,
                                groups, "B to store the groups it was let charge")
            held_by_b = {r["group_no"] for r in rows
                         if r["status"] == "LEASED" and b.owns(r["lease_owner"])}
            assert held_by_b, [dict(r) for r in rows]
            b.process.kill()
            # What B had sent the channel is processed to its end, as a real
            # channel would: it lands now, before any takeover settles it.
            card_b.faults.release_charges()
            await card_b.finish_late_work()

            # A's charges wait at the channel for a while, so the batch's
            # next groups are C's to take: C provably takes part.
            card_a.faults.hold_charges()
            feed.send_the_rest()
            await _until(lambda rows: sum(c.owns(r["processed_by"]) for r in rows) >= 2,
                         groups, "C to finish two groups")
            card_a.faults.release_charges()
            reply = await feed.finish()
            await groups()
        transactions = feed.sent
        # Running all along: no replica (starting, or sweeping now and then)
        # took it for a batch whose stream had died.
        assert batch_statuses <= {"RECEIVING", "PROCESSING", "COMPLETED"}, batch_statuses

        assert reply.summary.status == pb.BATCH_STATUS_COMPLETED, reply.summary
        assert reply.summary.counts.total == len(transactions) == ITEMS
        assert reply.summary.counts.pending == 0
        # Every item told once, by the group that finished it, whoever did.
        assert sorted(reply.reported) == sorted(tx.reference for tx in transactions)
        assert not reply.rejected

        # Every group done once: the ones B held were taken over (claimed
        # again) by a live replica; B's partial work on them left no trace.
        rows = await groups()
        assert {r["status"] for r in rows} == {"DONE"}
        assert len(rows) == len(reply.groups) == len(transactions) // GROUP_SIZE
        for row in rows:
            if row["group_no"] in held_by_b:
                assert row["lease_count"] >= 2 and not b.owns(row["processed_by"]), dict(row)
        by_replica = Counter(next((r.name for r in (a, b, c) if r.owns(row["processed_by"])),
                                  row["processed_by"]) for row in rows)
        # B exactly the two groups it was let charge; A and C the rest.
        assert by_replica["b"] == 2 and set(by_replica) == {"a", "b", "c"}, by_replica

        # The channel's ledger against what the client was told and what
        # paygrid stored: nothing lost, nothing charged twice.
        told = count_batch(transactions, reply.results, {"card": card.ledger})
        assert told.ok, told.describe()
        assert told.captures == sum(1 for tx in transactions
                                    if not tx.payee.startswith("decline_"))
        books = reconcile(lambda sql: postgres_rows(dsn, sql), {"card": card.ledger})
        assert books.ok, str(books)
        # B's kill and the takeovers left no group told twice, none untold.
        _each_group_told_once(await watch.fetch(_BATCH_EVENTS), rows, transactions)
    finally:
        if watch is not None:
            await watch.close()
        for replica in (a, b, c):
            replica.process.terminate()
        for front in (card_a, card_b, card_c):
            front.faults.release_charges()
        await card.stop()


@pytest.mark.postgresql_only
async def test_a_paused_replica_whose_lease_ran_out_cannot_store_its_stale_results(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    """B stops (SIGSTOP: a long GC pause, a frozen VM) holding a group
    mid-charge; A takes the group over once the lease runs out and stores its
    results. When B wakes up, its late results are refused (fenced by the
    group's claim count): the group stays A's, every item paid once."""
    card = Channel()
    (card_a, port_a), (card_b, port_b) = [await card.front(seed) for seed in (11, 12)]
    card_b.faults.hold_charges()  # B's first group stays mid-charge
    dsn = await postgres_databases.create()
    a, b = (Replica(tmp_path, name, dsn, port, **LEASES)
            for name, port in (("a", port_a), ("b", port_b)))
    watch = None
    try:
        await asyncio.gather(a.process.start(a.port), b.process.start(b.port))
        watch = await asyncpg.connect(dsn)

        async def groups() -> list[asyncpg.Record]:
            return await watch.fetch("SELECT group_no, status, lease_owner, lease_count, "
                                     "processed_by FROM batch_groups ORDER BY group_no")

        async with keyed_channel(a.target) as ch_a:
            feed = Feed(batch_stub(ch_a), "paused", _transactions(ITEMS), reserve=1_000)
            await asyncio.wait_for(card_b.faults.held(1), 60)
            # Frozen inside a transaction, B would keep its rows locked (and
            # a statement half sent keeps the server from ending its
            # session): what this test is about needs B frozen between
            # transactions, as it mostly is once its groups wait at the
            # channel. Checked, not hoped for: frozen at a bad point, B goes
            # on and is frozen again.
            for _ in range(200):
                b.process.process.send_signal(signal.SIGSTOP)
                if not await _in_a_transaction(watch, b.pid):
                    break
                b.process.process.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.05)  # spaces the tries; proves nothing
            else:
                raise AssertionError("B was inside a transaction at every try")
            paused = {r["group_no"] for r in await groups()
                      if r["status"] == "LEASED" and b.owns(r["lease_owner"])}
            assert paused
            await _until(lambda rows: all(r["status"] == "DONE" for r in rows
                                          if r["group_no"] in paused),
                         groups, "A to take B's groups over")
            b.process.process.send_signal(signal.SIGCONT)
            card_b.faults.release_charges()  # B's charges land late: fenced or replayed
            # Its late results refused ("lease lost"); or, if it was frozen
            # inside a transaction, the server had ended that session.
            await wait_for(lambda: any(event in b.process.log.read_text() for event in (
                "batch.group_lease_lost", "batch.group_failed")),
                "B to find its lease lost", timeout_s=60)
            reply = await feed.finish()
        transactions = feed.sent

        assert reply.summary.status == pb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(tx.reference for tx in transactions)
        for row in await groups():
            if row["group_no"] in paused:
                assert row["lease_count"] >= 2 and a.owns(row["processed_by"]), dict(row)
        told = count_batch(transactions, reply.results, {"card": card.ledger})
        assert told.ok, told.describe()
        books = reconcile(lambda sql: postgres_rows(dsn, sql), {"card": card.ledger})
        assert books.ok, str(books)
        # B's refused results wrote no event: each group told once, by A.
        _each_group_told_once(await watch.fetch(_BATCH_EVENTS), await groups(), transactions)
    finally:
        if watch is not None:
            await watch.close()
        for replica in (a, b):
            if replica.process.process is not None:
                replica.process.process.send_signal(signal.SIGCONT)
            replica.process.terminate()
        for front in (card_a, card_b):
            front.faults.release_charges()
        await card.stop()


# The test's one batch's events, in version order.
_BATCH_EVENTS = ("SELECT type, aggregate_version, payload FROM events "
                 "WHERE aggregate_type = 'batch' ORDER BY aggregate_version")


def _each_group_told_once(events: list, groups: list,
                          transactions: list[pb.BatchTransaction]) -> None:
    """`events` (rows of _BATCH_EVENTS): versions 1..N without a gap; one
    batch.group.completed per group (`groups`: rows, group_no first); one
    batch.item.failed per declined item (every other item succeeded: told
    only by its group)."""
    assert [version for _, version, _ in events] == list(range(1, len(events) + 1))
    told = Counter(event_type.removeprefix("io.paygrid.batch.").removesuffix(".v1")
                   for event_type, _, _ in events)
    assert set(told) <= {"created", "resumed", "group.completed", "item.failed", "completed",
                         "interrupted"} and told["completed"] >= 1, told
    group_nos = Counter(pb.GroupResult.FromString(payload).group_no
                        for event_type, _, payload in events if ".group." in event_type)
    assert group_nos == Counter(group[0] for group in groups)
    failed = Counter(pb.BatchItem.FromString(payload).transaction.reference
                     for event_type, _, payload in events if ".item.failed." in event_type)
    assert failed == Counter(tx.reference for tx in transactions
                             if tx.payee.startswith("decline_"))


def _postgres_client_ports(pid: int) -> set[int]:
    """Local ports of a process's TCP connections to PostgreSQL (port 5432)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == 5432:
            ports.add(int(local.split(":")[1], 16))
    return ports


async def _in_a_transaction(watch: asyncpg.Connection, pid: int) -> bool:
    """Whether any PostgreSQL session of process `pid` is inside a
    transaction or a statement (a frozen one would hold what it locked)."""
    ports = _postgres_client_ports(pid)
    assert ports, f"process {pid} has no connection to PostgreSQL"
    return await watch.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE client_port = ANY($1::int[]) "
        "AND (state <> 'idle' OR xact_start IS NOT NULL)", list(ports))


async def _until(condition, fetch, what: str, timeout_s: float = 60):
    """Rows once `condition` holds of them: for an outcome the test has made
    certain (the database sends no event a test could wait on), never for a
    moment that may pass; the timeout only ends a test that went wrong."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        rows = await fetch()
        if condition(rows):
            return rows
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.sqlite_only
async def test_one_sqlite_server_restarted_finishes_its_killed_groups_at_once(
        tmp_path: Path) -> None:
    """SQLite serves one process per file, so its groups are claimed in
    memory, never leased in the database: nothing of a killed server waits
    for a lease to run out. The resubmission settles the items it left
    mid-charge with their channel and finishes the batch at once (however
    long batch_lease_ms is), each item paid once."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour(seed=3))
    # The first group's charges pass; the next stay at the channel, so the
    # server is provably mid-charge when it is killed.
    card.faults.hold_charges(after_calls=1)
    database = tmp_path / "paygrid.sqlite3"
    # A lease far longer than the test may take: only freeing it lets it finish.
    server = Replica(tmp_path, "only", database, sim_port,  # type: ignore[arg-type]
                     batch_lease_ms=600_000, batch_lease_renew_every_ms=1_000)
    transactions = _transactions(200)
    try:
        await server.process.start(server.port)
        async with keyed_channel(server.target) as ch:
            call = batch_stub(ch).SubmitBatch(iter(_messages("solo", transactions)), timeout=60)
            await asyncio.wait_for(card.faults.held(1), 60)
            server.process.kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await collect(call)
        # What the dead server had sent lands now, as on a real channel.
        card.faults.release_charges()
        await card.finish_late_work()
        left = dict(sqlite_rows(database)(
            "SELECT status, count(*) FROM batch_items GROUP BY status"))
        assert left.get("PROCESSING", 0) >= 1, left

        await server.process.start(server.port)
        async with keyed_channel(server.target) as ch:
            reply = await submit(batch_stub(ch), *_messages("solo", transactions), timeout=30)
        assert reply.summary.status == pb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(tx.reference for tx in transactions)
        told = count_batch(transactions, reply.results, {"card": card.ledger})
        assert told.ok, told.describe()
        books = reconcile(sqlite_rows(database), {"card": card.ledger})
        assert books.ok, str(books)
        # The groups the kill left mid-charge are told once, when settled.
        rows = sqlite_rows(database)
        _each_group_told_once(rows(_BATCH_EVENTS), rows("SELECT group_no FROM batch_groups"),
                              transactions)
    finally:
        server.process.terminate()
        await sim_server.stop(None)


def test_a_lease_renewed_too_rarely_to_stay_alive_is_refused_at_start() -> None:
    environ = {"PAYGRID_BATCH_LEASE_MS": "3000", "PAYGRID_BATCH_LEASE_RENEW_EVERY_MS": "2000"}
    with pytest.raises(ConfigError, match="batch_lease_renew_every_ms"):
        load_config(None, environ=environ)
    assert load_config(None, environ={**environ, "PAYGRID_BATCH_LEASE_RENEW_EVERY_MS": "1500"}
                       ).batch_lease_renew_every_ms == 1_500
