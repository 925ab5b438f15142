"""Pay side by side with an older commit, per thread: server CPU per Pay of
this tree and of `--baseline` (main by default) under the same load, and
for each server thread its CPU and its context switches per Pay (from
/proc/<pid>/task), `rounds` rounds with the order alternating, medians.

Why per thread: on a shared machine one run's CPU per Pay moves by 10% or
more, but both servers of a round get the same machine; and a change to the
SQLite writer shows on its own thread (the event loop's is the server's
main thread; the writer is the busiest of the other Python threads).
With `--engine postgresql` each server gets a schema of its own on the
PostgreSQL at PAYGRID_TEST_POSTGRES_DSN (tests/support/postgres_databases.py),
made for the round and dropped after it; the CPU figures are the servers'
only (PostgreSQL's own backends serve both alike).
Usage (after scripts/setup):
  .venv/bin/python scripts/bench_pay_threads.py [--rounds 6] [--concurrency 32,128] [--engine sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from bench_baseline_tree import baseline_tree
from bench_event_cost import _drive
from bench_server import cpu_s, paygrid_server, stat_comm, stat_cpu_s
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/
from tests.support.postgres_databases import PostgresDatabases  # noqa: E402

def thread_counters(pid: int) -> dict[str, tuple[float, int, int]]:
    """CPU seconds, voluntary and involuntary switches of each thread, by
    "loop" (the main thread) or "<comm>:<tid>"."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat, status = (task / "stat").read_text(), (task / "status").read_text()
        except FileNotFoundError:
            continue  # ended meanwhile
        switches = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                    if line.endswith(tuple("0123456789")) and "ctxt_switches" in line}
        name = "loop" if task.name == str(pid) else f"{stat_comm(stat)}:{task.name}"
        found[name] = (stat_cpu_s(stat),
                       switches["voluntary_ctxt_switches"], switches["nonvoluntary_ctxt_switches"])
    return found


def per_pay(before: dict, after: dict, calls: int) -> dict[str, list]:
    """[µs CPU, voluntary, involuntary switches] per Pay, busiest first."""
    rows = {}
    for name, (cpu, vol, invol) in after.items():
        cpu0, vol0, invol0 = before.get(name, (0.0, 0, 0))
        rows[name] = [round((cpu - cpu0) * 1e6 / calls), round((vol - vol0) / calls, 2),
                      round((invol - invol0) / calls, 2)]
    return dict(sorted(((n, r) for n, r in rows.items() if r[0] > 3 or r[1] > 0.3),
                       key=lambda item: -item[1][0]))


async def pay_round(trees: dict[str, dict | None], concurrency: int, duration_s: float,
                    engine: str = "sqlite") -> dict:
    databases = PostgresDatabases()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(databases.drop_all)
        servers = {}
        for name, env in trees.items():
            dsn = await databases.create() if engine == "postgresql" else None
            servers[name] = await stack.enter_async_context(paygrid_server(
                in_process_channel_latency_ms=0, channel_called_directly=True, extra_env=env,
                postgres_dsn=dsn))
        before = {name: (cpu_s(s.pid), thread_counters(s.pid)) for name, s in servers.items()}
        results = _drive([s.target for s in servers.values()], concurrency, duration_s)
        out = {}
        for (name, server), result in zip(servers.items(), results):
            calls = result["calls"] + concurrency  # the warm-up calls are on the bill too
            cpu_us = (cpu_s(server.pid) - before[name][0]) * 1e6
            out[name] = {"cpu_us_per_pay": round(cpu_us / calls), "qps": result["qps"],
                         "threads": per_pay(before[name][1], thread_counters(server.pid), calls)}
    return out


async def run(rounds: int, levels: list[int], duration_s: float, baseline: str,
              engine: str = "sqlite") -> dict:
    summary = {}
    with baseline_tree(baseline) as baseline_env:
        for concurrency in levels:
            by_round = []
            for round_no in range(rounds):
                names = ["baseline", "this"] if round_no % 2 == 0 else ["this", "baseline"]
                trees = {name: baseline_env if name == "baseline" else None for name in names}
                result = await pay_round(trees, concurrency, duration_s, engine)
                print(json.dumps({"concurrency": concurrency, "round": round_no, **result}),
                      flush=True)
                by_round.append(result)
            ratios = sorted(round(r["this"]["cpu_us_per_pay"]
                                  / r["baseline"]["cpu_us_per_pay"], 3) for r in by_round)
            summary[concurrency] = {
                name: statistics.median(r[name]["cpu_us_per_pay"] for r in by_round)
                for name in ("baseline", "this")} | {
                "ratio": statistics.median(ratios), "ratios": ratios}
    return {"baseline": baseline, "engine": engine, "rounds": rounds, "duration_s": duration_s,
            "levels": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", default="32,128")
    parser.add_argument("--duration-s", type=float, default=4.0)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, [int(n) for n in args.concurrency.split(",")],
                                     args.duration_s, args.baseline, args.engine))))


if __name__ == "__main__":
    main()
