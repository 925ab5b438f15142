"""`serve --workers N` figures: Pay peak and batch throughput with 1 and 2
workers, on SQLite (the workers share one file) and PostgreSQL, with the
server's CPU per Pay (user + system of the supervisor and its workers, from
/proc, over each level's calls).

Pay: closed loop from the Node load generator (niced, so the server gets
the cores first), calls spread over `--connections` connections (the kernel
spreads connections, not calls, over the workers), 1 leg, an in-process
channel simulator called directly with 0 latency; the peak is the best of the
concurrency levels. Batch: one SubmitBatch stream from Python (it lands on
one worker; on PostgreSQL the other workers claim its groups too), a channel
simulator process of its own. Each Pay level also prints the busy cores of the
server and of the whole machine (/proc/stat): where the machine is already busy
with one worker, a second has no core to add, and each worker's share of the
workers' CPU: how evenly the kernel spread the connections, which swings the
2-worker peak. The machine is shared and its speed drifts over minutes, so
each of `--rounds` rounds measures 1 and 2 workers back to back, in turn
1-2 then 2-1 (a drift weighs on both alike), and the ratio printed is the
median of the rounds' ratios, each round's beside it. Beside it, the most
any 2 workers could give on this machine: its cores, all busy, over the
machine's CPU per Pay (server, generator and all) with 2 workers, against
1 worker's peak.
Usage (after scripts/setup, `npm ci` in clients/node, a PostgreSQL at
PAYGRID_TEST_POSTGRES_DSN):
  .venv/bin/python scripts/bench_workers.py [--duration-s 5] [--concurrency 32,128]
      [--connections 8] [--items 20000 (0: no batch)] [--niceness 10]
      [--engines sqlite,postgresql] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import grpc

from paygrid.v1 import batch_service_pb2_grpc as pb_grpc
from bench_batch import batch_requests
from bench_load import in_turn
from bench_pay_load import PAY_METHOD, pay_request_maker
from bench_server import AUTH_METADATA, cpu_s, paygrid_server, per_process, process_tree
from node_load import node_unary_load
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/
from tests.support.api_key_metadata import keyed_channel  # noqa: E402
from tests.support.postgres_databases import PostgresDatabases  # noqa: E402

CALLS_PER_SECOND_AT_MOST = 5_000  # bodies prepared per level: above any peak here


def tree_cpu_s(supervisor: int) -> dict[int, float]:
    """CPU of the process started and of each process under it (the
    workers), by pid: the server's CPU is their sum."""
    return per_process(cpu_s, process_tree(supervisor))


def worker_shares(before: dict[int, float], after: dict[int, float],
                  supervisor: int) -> list[float]:
    """Each worker's part of the workers' CPU between two tree_cpu_s
    readings, largest first: the kernel spreads connections, not calls,
    over the workers, so a few connections may load one worker more (empty
    for a lone server)."""
    used = [cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid != supervisor]
    total = sum(used)
    return sorted((round(u / total, 2) for u in used), reverse=True) if total else []


def machine_cpu_s() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


async def pay_peak(target: str, pid: int, levels: list[int], duration_s: float,
                   connections: int, niceness: int, transport: str) -> dict:
    # Busy cores of the whole machine beside the server's own: on 2 cores
    # shared with the generator (and PostgreSQL), whether a second worker
    # had a core to run on at all.
    by_level, cpu_by_level, cores_by_level, generator_by_level = {}, {}, {}, {}
    shares_by_level, machine_by_level = {}, {}
    for level in levels:
        tree_before = tree_cpu_s(pid)
        machine_before = machine_cpu_s()
        calls, _, generator_cpu_s = await node_unary_load(
            target, PAY_METHOD, pay_request_maker(uuid.uuid4().hex[:8]),
            int(CALLS_PER_SECOND_AT_MOST * duration_s), AUTH_METADATA, 30,
            closed_loop=(level, duration_s), niceness=niceness, connections=connections,
            transport=transport)
        tree_after = tree_cpu_s(pid)
        cpu = sum(tree_after.values()) - sum(tree_before.values())
        shares_by_level[level] = worker_shares(tree_before, tree_after, pid)
        busy, total = (after - before for after, before in zip(machine_cpu_s(), machine_before))
        ok = sum(1 for _, code, _ in calls if code == grpc.StatusCode.OK)
        by_level[level] = round(ok / duration_s, 1)
        cpu_by_level[level] = round(cpu * 1e6 / max(ok, 1))
        machine_by_level[level] = round(busy * 1e6 / max(ok, 1))
        generator_by_level[level] = round(generator_cpu_s * 1e6 / max(len(calls), 1))
        cores = os.cpu_count() or 1
        cores_by_level[level] = {"server": round(cpu / (total / cores), 2),
                                 "machine": round(busy / (total / cores), 2), "of": cores}
    return {"pay_qps_by_concurrency": by_level, "pay_peak_qps": max(by_level.values()),
            "server_cpu_us_per_pay_by_concurrency": cpu_by_level,
            "busy_cores_by_concurrency": cores_by_level,
            "machine_cpu_us_per_pay_by_concurrency": machine_by_level,
            "worker_cpu_shares_by_concurrency": shares_by_level,
            "generator_cpu_us_per_call_by_concurrency": generator_by_level}


async def batch_rate(target: str, items: int) -> float:
    started = time.perf_counter()
    async with keyed_channel(target) as channel:
        call = pb_grpc.BatchServiceStub(channel).SubmitBatch(
            batch_requests(items, 500, 100, 8), timeout=600)
        summary = None
        async for response in call:
            if response.WhichOneof("kind") == "summary":
                summary = response.summary
    assert summary is not None and summary.counts.succeeded == items, summary
    return round(items / (time.perf_counter() - started), 1)


async def measure(engine: str, workers: int, args: argparse.Namespace) -> dict:
    databases = PostgresDatabases()
    try:
        dsn = await databases.create() if engine == "postgresql" else None
        async with paygrid_server(0, channel_called_directly=True, postgres_dsn=dsn,
                                  workers=workers) as server:
            result = await pay_peak(server.target, server.pid, args.levels, args.duration_s,
                                    args.connections, args.niceness, args.transport)
        if not args.items:
            return {"engine": engine, "workers": workers, **result}
        dsn = await databases.create() if engine == "postgresql" else None
        async with paygrid_server(simulator_process=True, postgres_dsn=dsn,
                                  workers=workers) as server:
            result["batch_items_per_s"] = await batch_rate(server.target, args.items)
    finally:
        await databases.drop_all()
    return {"engine": engine, "workers": workers, **result}


def all_cores_bound(one: dict, two: dict, cores: int) -> float:
    """The most 2 workers' Pay peak could be over 1 worker's (`one`, `two`:
    pay_peak results) with every core busy: the cores over the machine's
    CPU per Pay at 2 workers' peak level, over 1 worker's peak. No ratio
    can pass it on this machine; how far one stays under it is the
    server's (its serial writes, how the connections were spread)."""
    level = max(two["pay_qps_by_concurrency"], key=two["pay_qps_by_concurrency"].get)
    most_pays_per_s = cores * 1e6 / two["machine_cpu_us_per_pay_by_concurrency"][level]
    return round(most_pays_per_s / one["pay_peak_qps"], 2)


def ratio_by_rounds(results: list[dict], engine: str,
                    cores: int) -> tuple[float, list[float], float, list[float]]:
    """The median over the rounds of (2 workers' Pay peak / 1 worker's) and
    each round's ratio, in round order; then the same of all_cores_bound."""
    rounds: dict[int, dict[int, dict]] = {}
    for result in results:
        if result["engine"] == engine:
            rounds.setdefault(result["round"], {})[result["workers"]] = result
    ratios, bounds = [], []
    for _, by_workers in sorted(rounds.items()):
        one, two = by_workers[1], by_workers[2]
        ratios.append(round(two["pay_peak_qps"] / one["pay_peak_qps"], 2))
        bounds.append(all_cores_bound(one, two, cores))
    return statistics.median(ratios), ratios, statistics.median(bounds), bounds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", default="32,128")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--niceness", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transport", default="http2", choices=("http2", "grpc-js"),
                        help="the Node generator's (scripts/open_loop_load.js)")
    args = parser.parse_args()
    args.levels = [int(level) for level in args.concurrency.split(",")]
    engines = args.engines.split(",")
    if unknown := set(engines) - {"sqlite", "postgresql"}:
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))} (sqlite, postgresql)")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    results = []
    for engine in engines:
        for round_no in range(args.rounds):
            for workers in in_turn(round_no, 1, 2):
                results.append({"round": round_no, **await measure(engine, workers, args)})
                print(json.dumps(results[-1]), flush=True)
    cores = os.cpu_count() or 1
    for engine in engines:
        median, ratios, bound, bounds = ratio_by_rounds(results, engine, cores)
        print(f"{engine} Pay peak, 2 workers / 1 worker: {median:.2f}x, the median of "
              f"{len(ratios)} rounds ({', '.join(f'{r:.2f}' for r in ratios)}); with all "
              f"{cores} cores busy at most {bound:.2f}x "
              f"({', '.join(f'{b:.2f}' for b in bounds)})")


if __name__ == "__main__":
    asyncio.run(main())
