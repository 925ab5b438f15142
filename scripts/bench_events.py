"""Events per second through WatchEvents, beside Pay throughput: a watcher
follows the log while Pay load runs (1 leg, channel in process, each Pay
writes 3 events: payment.created, payment.leg.succeeded,
payment.succeeded), then a second watcher replays the whole backlog from
cursor 0; then the RabbitMQ relay's rows (bench_relay.py). Usage (after scripts/setup):
  .venv/bin/python scripts/bench_events.py [--duration-s 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from paygrid.v1 import event_service_pb2 as pb
from paygrid.v1 import event_service_pb2_grpc as pb_grpc

import bench_relay
from bench_load import measure_unary
from bench_pay_load import PAY_METHOD, check_succeeded, pay_request_maker
from bench_server import AUTH_METADATA, RunningServer, cpu_s, events_stored, paygrid_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/
from tests.support.api_key_metadata import keyed_channel

CATCH_UP_TIMEOUT_S = 120


class Watcher:
    """One WatchEvents stream from a cursor, counting the events it gets."""

    def __init__(self, server: RunningServer, after_cursor: int = 0) -> None:
        self.received = 0
        self._server = server
        self._after_cursor = after_cursor
        self._want: int | None = None
        self._reached = asyncio.Event()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async with keyed_channel(self._server.target) as channel:
            stream = pb_grpc.EventServiceStub(channel).WatchEvents(
                pb.WatchEventsRequest(after_cursor=self._after_cursor))
            async for response in stream:
                if response.HasField("event"):
                    self.received += 1
                    if self._want is not None and self.received >= self._want:
                        self._reached.set()

    async def wait_for(self, count: int) -> None:
        """Returns once `count` events have come (fails if the stream ends first)."""
        self._want = count
        if self.received < count:
            done, _ = await asyncio.wait({asyncio.create_task(self._reached.wait()), self._task},
                                         timeout=CATCH_UP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            assert self._reached.is_set(), (self.received, count, self._task)

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def run(duration_s: float, concurrency: int) -> dict:
    async with paygrid_server(in_process_channel_latency_ms=0,
                              channel_called_directly=True) as server:
        follower = Watcher(server)
        cpu_before = cpu_s(server.pid)
        pay = await measure_unary(server.target, PAY_METHOD,
                                  pay_request_maker(uuid.uuid4().hex[:8]), concurrency,
                                  duration_s, AUTH_METADATA, check_succeeded)
        load_end = time.perf_counter()
        during_load = follower.received
        backlog = events_stored(server)
        await follower.wait_for(backlog)
        catch_up_ms = (time.perf_counter() - load_end) * 1_000
        pay["server_cpu_us_per_call"] = round(
            (cpu_s(server.pid) - cpu_before) * 1e6 / (pay["calls"] + concurrency))
        await follower.stop()

        started = time.perf_counter()
        replayer = Watcher(server)
        await replayer.wait_for(backlog)
        replay_s = time.perf_counter() - started
        await replayer.stop()
    relay = await bench_relay.run(duration_s, concurrency)
    return {
        "concurrency": concurrency, "duration_s": duration_s, "pay": pay,
        "follow": {"events": backlog, "received_during_load": during_load,
                   "events_per_s": round(during_load / duration_s, 1),
                   "caught_up_ms_after_load": round(catch_up_ms, 1)},
        "replay": {"events": backlog, "wall_s": round(replay_s, 3),
                   "events_per_s": round(backlog / replay_s, 1)},
        "relay": relay,
    }


def markdown(result: dict) -> str:
    pay, follow, replay, relay = (result[k] for k in ("pay", "follow", "replay", "relay"))
    return "\n".join([
        f"Pay at {result['concurrency']} in flight, 1 leg, channel in process, "
        f"{result['duration_s']} s, one watcher following the log:", "",
        "| figure | measured |", "|---|---:|",
        f"| Pay calls/s (with the watcher) | {pay['qps']:,.0f} |",
        f"| Pay server CPU µs per call (with the watcher) | {pay['server_cpu_us_per_call']:,} |",
        f"| WatchEvents following: events/s during the load | {follow['events_per_s']:,.0f} |",
        f"| WatchEvents following: all {follow['events']:,} events in, after the load ended "
        f"| {follow['caught_up_ms_after_load']:,.0f} ms |",
        f"| WatchEvents replaying the backlog from cursor 0 | {replay['events_per_s']:,.0f} "
        f"events/s ({replay['events']:,} in {replay['wall_s']} s) |",
        *bench_relay.markdown_rows(relay),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    result = asyncio.run(run(args.duration_s, args.concurrency))
    print(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
