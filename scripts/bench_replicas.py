"""One batch shared by 1 or more paygrid replicas on one PostgreSQL: items/s,
and with --kill, one replica SIGKILLed mid-batch whose groups the others
take over; then the channel's ledger against paygrid's records (0 lost, 0
charged twice).

Each replica is its own process on a loopback port; all share a fresh
PostgreSQL schema (dropped afterwards) and one channel simulator, run in this
process so its ledger can be read (it serves the replicas over loopback gRPC
as any remote channel). The batch streams to replica 0.
Usage (after scripts/setup; PostgreSQL at PAYGRID_BENCH_POSTGRES_DSN, default
postgresql://postgres@127.0.0.1:5432/test):
  .venv/bin/python scripts/bench_replicas.py --replicas 1 --items 100000
  .venv/bin/python scripts/bench_replicas.py --replicas 3 --items 100000 [--kill]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import batch_service_pb2_grpc as pb_grpc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/: helpers shared with the tests
from tests.support.api_key_metadata import keyed_channel
from tests.support.local_process import free_loopback_port, wait_until_serving
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from paygrid_server.ledger_reconciliation import reconcile

from bench_batch import batch_requests

ROOT = Path(__file__).resolve().parent.parent
DSN = os.environ.get("PAYGRID_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _replica_name(owner: str | None, pids: dict[str, int]) -> str:
    """`replicaN` for a lease owner (host:pid:nonce)."""
    pid = owner.split(":")[1] if owner else ""
    return f"replica{pids[pid]}" if pid in pids else str(owner)


def _in_schema(schema: str) -> str:
    parts = urlsplit(DSN)
    query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
    return parts._replace(query=query).geturl()


def _start_replica(folder: Path, n: int, dsn: str, sim_port: int, lease_ms: int,
                   workers: int) -> tuple[int, subprocess.Popen]:
    port = free_loopback_port()
    config = folder / f"replica{n}.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
database = "{dsn}"
batch_lease_ms = {lease_ms}
batch_lease_renew_every_ms = {lease_ms // 4}
batch_group_workers = {workers}
[[channels]]
name = "card"
target = "127.0.0.1:{sim_port}"
timeout_ms = 30000
""")
    env = {**os.environ, "PAYGRID_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
           "PAYGRID_METRICS_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "paygrid_server", "serve", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(folder / f"replica{n}.log").open("w"),
        env=env)
    return port, process


async def run(args: argparse.Namespace) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {schema}")
    dsn = _in_schema(schema)
    sim_server, card, sim_port = await start_simulator(
        "card", SimulatorBehaviour(latency_ms=args.channel_latency_ms, seed=1))
    replicas: list[tuple[int, subprocess.Popen]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            # The first replica migrates the schema; the others then start at once.
            replicas.append(_start_replica(Path(folder), 0, dsn, sim_port, args.lease_ms,
                                           args.group_workers))
            await wait_until_serving(*replicas[0])
            replicas += [_start_replica(Path(folder), n, dsn, sim_port, args.lease_ms,
                                        args.group_workers) for n in range(1, args.replicas)]
            for port, process in replicas[1:]:
                await wait_until_serving(port, process)
            pids = {str(process.pid): n for n, (_, process) in enumerate(replicas)}
            watch = await asyncpg.connect(dsn)
            killed_at_groups = killed_holding = None
            started = time.perf_counter()
            async with keyed_channel(f"127.0.0.1:{replicas[0][0]}") as channel:
                call = pb_grpc.BatchServiceStub(channel).SubmitBatch(
                    batch_requests(args.items, args.per_message, args.group_size, args.parallelism))
                summary = None

                async def read() -> None:
                    nonlocal summary
                    async for response in call:
                        if response.WhichOneof("kind") == "summary":
                            summary = response.summary

                reading = asyncio.ensure_future(read())
                if args.kill:
                    groups = -(-args.items // args.group_size)
                    victim = replicas[1][1]
                    while not reading.done():
                        done = await watch.fetchval(
                            "SELECT count(*) FROM batch_groups WHERE status = 'DONE'")
                        # Killed while it holds groups mid-charge (frozen
                        # first, so what it holds is known when it dies).
                        if done >= groups * args.kill_at_fraction:
                            victim.send_signal(signal.SIGSTOP)
                            await asyncio.sleep(0.1)
                            held = await watch.fetchval(
                                "SELECT count(*) FROM batch_groups WHERE status = 'LEASED' "
                                "AND split_part(lease_owner, ':', 2) = $1", str(victim.pid))
                            if held:
                                victim.kill()  # SIGKILL
                                killed_at_groups, killed_holding = done, held
                                break
                            victim.send_signal(signal.SIGCONT)
                        await asyncio.sleep(0.05)
                await reading
            wall_s = time.perf_counter() - started
            by_owner = Counter(dict(await watch.fetch(
                "SELECT processed_by, count(*) FROM batch_groups GROUP BY processed_by")))
            taken_over = await watch.fetchval(
                "SELECT count(*) FROM batch_groups WHERE lease_count > 1")
            statuses = dict(await watch.fetch(
                "SELECT status, count(*) FROM batch_items GROUP BY status"))
            await watch.close()
    finally:
        for _, process in replicas:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        await sim_server.stop(None)

    def rows(sql: str) -> list[tuple]:
        async def fetch() -> list[tuple]:
            db = await asyncpg.connect(dsn)
            try:
                return [tuple(r) for r in await db.fetch(sql)]
            finally:
                await db.close()
        return asyncio.run(fetch())

    with ThreadPoolExecutor(1) as thread:  # reconcile reads synchronously
        books = thread.submit(reconcile, rows, {"card": card.ledger}).result()
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()
    assert summary is not None, "no summary"
    # Charges holding money, per key: more than one capture per item would
    # show as two keys for one payee.
    captured_payees = Counter(c.payee for c in card.ledger.charges.values()
                              if c.status.value == "CAPTURED")
    return {
        "replicas": args.replicas, "items": args.items, "group_size": args.group_size,
        "parallelism": args.parallelism, "channel_latency_ms": args.channel_latency_ms,
        "killed_one_at_groups_done": killed_at_groups,
        "groups_it_held_mid_charge": killed_holding,
        "status": pb.BatchStatus.Name(summary.status),
        "succeeded": summary.counts.succeeded, "pending": summary.counts.pending,
        "wall_s": round(wall_s, 2),
        "client_items_per_s": round(args.items / wall_s, 1),
        "server_throughput_items_per_s": round(summary.timing.throughput_items_per_second, 1),
        "apt_ms": round(summary.timing.average_processing_time.ToMicroseconds() / 1_000, 1),
        # Replica 0 has the stream; replica 1 is the one killed with --kill.
        "groups_by_replica": {_replica_name(owner, pids): n for owner, n in by_owner.items()},
        "groups_taken_over": taken_over,
        "item_statuses": statuses,
        "captured": sum(captured_payees.values()),
        "items_captured_twice": sum(1 for n in captured_payees.values() if n > 1),
        "items_not_captured": args.items - len(captured_payees),
        "books_agree": books.ok,
        "books": None if books.ok else str(books)[:2000],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--group-workers", type=int, default=32)
    parser.add_argument("--channel-latency-ms", type=float, default=20.0)
    parser.add_argument("--lease-ms", type=int, default=4_000)
    parser.add_argument("--kill", action="store_true",
                        help="SIGKILL replica 1 (not the stream's) mid-batch")
    parser.add_argument("--kill-at-fraction", type=float, default=0.4,
                        help="of the groups done when replica 1 is killed")
    args = parser.parse_args()
    assert not args.kill or args.replicas >= 2, "--kill needs a replica besides the stream's"
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
