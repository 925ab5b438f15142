"""The one closed-loop load generator every unary benchmark uses, so the
no-op ceiling and paygrid's Pay are driven by exactly the same client code:
raw bytes in and out (no client-side protobuf work), `concurrency` calls
always in flight on one HTTP/2 connection, for `duration_s`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Callable, TypeVar

import grpc

CALL_TIMEOUT_S = 10.0
T = TypeVar("T")


def in_turn(round_no: int, first: T, second: T) -> tuple[T, T]:
    """The order a round of two measurements back to back takes: first then
    second, then second then first, and so on, so that the machine's speed
    drifting over the rounds weighs on both alike."""
    return (first, second) if round_no % 2 == 0 else (second, first)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure_unary(target: str, method: str, make_request: Callable[[int], bytes],
                        concurrency: int, duration_s: float,
                        metadata: tuple[tuple[str, str], ...] = (),
                        check: Callable[[bytes], None] | None = None) -> dict:
    """`make_request(n)` gives the n-th call's body (unique n per call);
    `check` looks at every response (it should be cheap)."""
    counter = 0

    def next_request() -> bytes:
        nonlocal counter
        counter += 1
        return make_request(counter)

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        # Warm-up opens the connection and the streams before the clock starts.
        await asyncio.gather(*(call(next_request(), timeout=CALL_TIMEOUT_S, metadata=metadata)
                               for _ in range(concurrency)))
        latencies_ms: list[float] = []
        started = time.perf_counter()
        end = started + duration_s

        async def worker() -> None:
            while time.perf_counter() < end:
                request = next_request()
                call_started = time.perf_counter()
                response = await call(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
                latencies_ms.append((time.perf_counter() - call_started) * 1_000)
                if check is not None:
                    check(response)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    return {
        "concurrency": concurrency, "calls": len(latencies_ms),
        "qps": round(len(latencies_ms) / wall_s, 1),
        "p50_ms": round(statistics.median(latencies_ms), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
    }


async def measure_unary_at_rate(target: str, method: str, make_request: Callable[[int], bytes],
                                rate_per_s: float | Callable[[float], float], duration_s: float,
                                metadata: tuple[tuple[str, str], ...] = (),
                                max_in_flight: int = 1_024,
                                observe: Callable[[float, grpc.StatusCode, float], None]
                                | None = None) -> dict:
    """Open loop: starts calls at a fixed rate whatever the latency (as
    independent clients would), so latency is measured at that load.
    `rate_per_s` may be a function of the seconds since the start (a load
    step). `observe(started_s, code, latency_ms)`, when given, sees every
    call, and a call that fails is counted there instead of raised; the
    latencies returned are those of the calls that succeeded."""
    assert max_in_flight > 0
    rate_at = rate_per_s if callable(rate_per_s) else (lambda _: rate_per_s)
    latencies_ms: list[float] = []
    dropped = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        await call(make_request(0), timeout=CALL_TIMEOUT_S, metadata=metadata)  # connects
        in_flight: set[asyncio.Task] = set()

        async def one(n: int) -> None:
            call_started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                await call(make_request(n), timeout=CALL_TIMEOUT_S, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if observe is None:
                    raise
                code = error.code()
            latency_ms = (time.perf_counter() - call_started) * 1_000
            if code is grpc.StatusCode.OK:
                latencies_ms.append(latency_ms)
            if observe is not None:
                observe(call_started - started, code, latency_ms)

        started = due = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) < started + duration_s:
            if due > now:
                await asyncio.sleep(due - now)
            n += 1
            rate = rate_at(due - started)
            assert rate > 0
            due += 1 / rate
            if len(in_flight) >= max_in_flight:
                dropped += 1  # the server is not keeping up: not sent, counted
                continue
            task = asyncio.create_task(one(n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        wall_s = time.perf_counter() - started
    return {
        "target_rate_per_s": None if callable(rate_per_s) else round(rate_per_s, 1),
        "calls": len(latencies_ms),
        "achieved_qps": round(len(latencies_ms) / wall_s, 1), "not_sent": dropped,
        "p50_ms": round(statistics.median(latencies_ms), 3) if latencies_ms else None,
        "p99_ms": round(percentile(latencies_ms, 0.99), 3) if latencies_ms else None,
    }
