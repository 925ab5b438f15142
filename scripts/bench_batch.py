"""SubmitBatch figures: items/s, APT and the server's peak RSS for N items.

Runs the paygrid server and one channel simulator as their own processes on
loopback ports (so the RSS measured is paygrid's alone), with a throw-away
SQLite file, and streams N generated transfers. Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch.py --items 100000 [--per-message 500] [--workers 2]
With --workers N the server is `serve --workers N` on the SQLite file (its
workers lease the batch's groups in it); the CPU and RSS figures are then
the supervisor's and its workers' together.
"""

from __future__ import annotations

import sys
from pathlib import Path
import argparse
import asyncio
import json
import time

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import batch_service_pb2_grpc as pb_grpc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/: helpers shared with the tests
from tests.support.api_key_metadata import keyed_channel

from bench_server import (cpu_s, paygrid_server, per_process, process_tree, rss_kib,
                          thread_cpu_s, thread_cpu_since)
from thread_names import python_thread_names


def batch_requests(items: int, per_message: int, group_size: int, parallelism: int):
    yield pb.SubmitBatchRequest(header=pb.BatchHeader(
        batch_id="bench", payer="acct_bench_0001", max_group_size=group_size,
        parallelism=parallelism))
    for start in range(0, items, per_message):
        yield pb.SubmitBatchRequest(transactions=pb.BatchTransactions(transactions=[
            pb.BatchTransaction(reference=f"r{i:08d}", payee=f"payee_{i:08d}",
                                amount=money_pb2.Money(currency=("EUR", "USD")[i % 2],
                                                       amount_minor=100 + i % 1000))
            for i in range(start, min(items, start + per_message))]))


def _sum_over(measure, pids: list[int]) -> float:
    # A worker that exited is left out (a bench run is not meant to kill any).
    return sum(per_process(measure, pids).values())


async def run(items: int, per_message: int, group_size: int, parallelism: int,
              extra_env: dict[str, str] | None = None, workers: int = 1) -> dict:
    """extra_env: the server's (bench_baseline_tree runs an older commit's code)."""
    async with paygrid_server(simulator_process=True, extra_env=extra_env,
                              workers=workers) as server:
        pids = process_tree(server.pid)
        assert len(pids) == (1 if workers == 1 else 1 + workers), pids
        rss_start = _sum_over(rss_kib, pids)
        cpu_start = _sum_over(cpu_s, pids)
        threads_start = thread_cpu_s(server.pid)
        peak = rss_start
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _sum_over(rss_kib, pids))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        async with keyed_channel(server.target) as channel:
            call = pb_grpc.BatchServiceStub(channel).SubmitBatch(
                batch_requests(items, per_message, group_size, parallelism))
            summary = None
            async for response in call:
                if response.WhichOneof("kind") == "summary":
                    summary = response.summary
        wall_s = time.perf_counter() - started
        server_cpu_s = _sum_over(cpu_s, pids) - cpu_start
        threads = thread_cpu_since(threads_start, thread_cpu_s(server.pid),
                                   python_thread_names(server.pid))
        done.set()
        await sampler
    assert summary is not None and summary.counts.succeeded == items, summary
    return {
        "items": items, "per_message": per_message, "group_size": group_size,
        "parallelism": parallelism, "workers": workers,
        "client_items_per_s": round(items / wall_s, 1),
        "server_throughput_items_per_s": round(summary.timing.throughput_items_per_second, 1),
        "apt_ms": round(summary.timing.average_processing_time.ToMicroseconds() / 1_000, 3),
        "groups": summary.timing.groups,
        "wall_s": round(wall_s, 2),
        "server_cpu_us_per_item": round(server_cpu_s * 1e6 / items, 1),
        # The supervisor's own threads when workers > 1 (its workers are apart).
        "thread_cpu_us_per_item": {
            name: round(cpu * 1e6 / items, 1)
            for name, cpu in sorted(threads.items(), key=lambda t: -t[1])
            if cpu * 1e6 / items >= 0.1},
        "server_rss_start_mib": round(rss_start / 1024, 1),
        "server_rss_peak_mib": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    assert args.items >= 1 and 1 <= args.per_message <= 1_000
    result = asyncio.run(run(args.items, args.per_message, args.group_size, args.parallelism,
                             workers=args.workers))
    for key, value in result.items():
        print(f"{key:30} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
