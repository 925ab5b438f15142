"""SubmitBatch figures: items/s, APT and the server's peak RSS for N items.

Runs the paygrid server and one channel simulator as their own processes on
loopback ports (so the RSS measured is paygrid's alone), with a throw-away
SQLite file, and streams N generated transfers. Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch.py --items 100000 [--per-message 500]
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

from bench_server import cpu_s, paygrid_server, rss_kib


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


async def run(items: int, per_message: int, group_size: int, parallelism: int) -> dict:
    async with paygrid_server(simulator_process=True) as server:
        rss_start = rss_kib(server.pid)
        cpu_start = cpu_s(server.pid)
        peak = rss_start
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kib(server.pid))
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
        cpu_used_s = cpu_s(server.pid) - cpu_start
        done.set()
        await sampler
    assert summary is not None and summary.counts.succeeded == items, summary
    return {
        "items": items, "per_message": per_message, "group_size": group_size,
        "parallelism": parallelism,
        "client_items_per_s": round(items / wall_s, 1),
        "server_throughput_items_per_s": round(summary.timing.throughput_items_per_second, 1),
        "apt_ms": round(summary.timing.average_processing_time.ToMicroseconds() / 1_000, 3),
        "groups": summary.timing.groups,
        "wall_s": round(wall_s, 2),
        # What the batch costs the server (user + system), whatever else runs on the machine.
        "server_cpu_us_per_item": round(cpu_used_s * 1e6 / items, 1),
        "server_rss_start_mib": round(rss_start / 1024, 1),
        "server_rss_peak_mib": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=4)
    args = parser.parse_args()
    assert args.items >= 1 and 1 <= args.per_message <= 1_000
    result = asyncio.run(run(args.items, args.per_message, args.group_size, args.parallelism))
    for key, value in result.items():
        print(f"{key:30} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
