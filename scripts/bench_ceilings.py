"""Ceilings on this machine that paygrid's own figures are compared with.

Measures, in one run: a no-op grpc.aio unary server (QPS, p50/p99 per
concurrency level), a no-op bidi echo stream (items/s in 500-transaction
chunks), and raw SQLite commit rates with paygrid's pragmas (WAL,
synchronous=FULL), one row per commit and 500 rows per commit, through
aiosqlite and stdlib sqlite3. Usage (after scripts/setup):
  .venv/bin/python scripts/bench_ceilings.py [--duration-s 5] [--concurrency 1,8,32,128] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiosqlite
import grpc

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pay_pb

from bench_load import measure_unary, measure_unary_at_rate
from bench_server import cpu_s

SERVICE = "paygrid.bench.v1.Noop"
UNARY_METHOD = f"/{SERVICE}/Unary"
STREAM_METHOD = f"/{SERVICE}/EchoStream"
CHUNK_TRANSACTIONS = 500
GROUP_COMMIT_ROWS = 500
MAX_CONCURRENCY = 1_024
MAX_DURATION_S = 600.0
SERVER_START_TIMEOUT_S = 30.0


def pay_payloads() -> tuple[bytes, bytes]:
    """Serialized 1-leg PayRequest and a matching succeeded PayResponse."""
    amount = money_pb2.Money(currency="USD", amount_minor=100)
    request = pay_pb.PayRequest(
        idempotency_key="bench-00000001", payer="acct_bench_0001",
        legs=[pay_pb.PayLeg(payee="merchant_0000", amount=amount)])
    payment = pay_pb.Payment(
        payment_id="pay_0123456789abcdef0123456789ab", idempotency_key=request.idempotency_key,
        payer=request.payer, mode=pay_pb.PAYMENT_MODE_ALL_OR_NOTHING,
        status=pay_pb.PAYMENT_STATUS_SUCCEEDED,
        legs=[pay_pb.PaymentLeg(leg_index=0, payee="merchant_0000", amount=amount,
                                status=pay_pb.LEG_STATUS_SUCCEEDED, channel="card",
                                channel_reference="ch_0123456789abcdef", attempts=1)])
    payment.legs[0].latency.FromMilliseconds(3)
    payment.timing.received_at.GetCurrentTime()
    payment.timing.completed_at.GetCurrentTime()
    payment.timing.processing_time.FromMilliseconds(4)
    return request.SerializeToString(), pay_pb.PayResponse(payment=payment).SerializeToString()


def _batch_chunk() -> bytes:
    return batch_pb.SubmitBatchRequest(transactions=batch_pb.BatchTransactions(transactions=[
        batch_pb.BatchTransaction(reference=f"r{i:08d}", payee=f"payee_{i:08d}",
                                  amount=money_pb2.Money(currency=("EUR", "USD")[i % 2],
                                                         amount_minor=100 + i % 1000))
        for i in range(CHUNK_TRANSACTIONS)])).SerializeToString()


# --- no-op server, run in its own process so it does not share a GIL or an
# event loop with the load generator.

async def _serve(control: Connection, response: bytes) -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return response

    async def echo_stream(requests, context: grpc.aio.ServicerContext):
        async for message in requests:
            yield message

    # No serializers: handlers see and return raw bytes, so no proto is needed.
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "EchoStream": grpc.stream_stream_rpc_method_handler(echo_stream),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    control.send(port)
    try:
        # Any message, or EOF when the parent dies, stops the server.
        await asyncio.to_thread(control.recv)
    except EOFError:
        pass
    await server.stop(grace=1)


def _server_process_main(control: Connection, response: bytes) -> None:
    asyncio.run(_serve(control, response))


class NoopServer:
    def __init__(self, response: bytes) -> None:
        self._control, child_end = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_server_process_main, args=(child_end, response), daemon=True)
        self._process.start()
        child_end.close()
        if not self._control.poll(SERVER_START_TIMEOUT_S):
            self.stop()
            raise TimeoutError(f"no-op server not listening after {SERVER_START_TIMEOUT_S} s")
        self.port: int = self._control.recv()
        self.pid: int = self._process.pid

    def stop(self) -> None:
        try:
            self._control.send("stop")
        except OSError:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)


# --- load generators

async def measure_stream(target: str, chunk: bytes, duration_s: float) -> dict:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(STREAM_METHOD)(timeout=duration_s + 60)
        started = time.perf_counter()
        end = started + duration_s

        async def write_all() -> None:
            # write() waits for HTTP/2 flow control, which bounds what is in flight.
            while time.perf_counter() < end:
                await call.write(chunk)
            await call.done_writing()

        writer = asyncio.create_task(write_all())
        echoed_messages = 0
        async for _ in call:
            echoed_messages += 1
        await writer
        wall_s = time.perf_counter() - started
    return {
        "transactions_per_message": CHUNK_TRANSACTIONS, "messages": echoed_messages,
        "items": echoed_messages * CHUNK_TRANSACTIONS,
        "messages_per_s": round(echoed_messages / wall_s, 1),
        "items_per_s": round(echoed_messages * CHUNK_TRANSACTIONS / wall_s, 1),
    }


# --- SQLite, with the pragmas of paygrid_server.storage.sqlite.database

PRAGMAS = ("journal_mode = WAL", "busy_timeout = 5000", "synchronous = FULL")
CREATE_TABLE = "CREATE TABLE bench (id INTEGER PRIMARY KEY, reference TEXT NOT NULL, " \
               "payee TEXT NOT NULL, amount_minor INTEGER NOT NULL, currency TEXT NOT NULL)"
INSERT = "INSERT INTO bench (reference, payee, amount_minor, currency) VALUES (?, ?, ?, ?)"


def _rows(start: int, count: int) -> list[tuple]:
    return [(f"r{i:010d}", f"payee_{i:08d}", 100 + i % 1000, "USD")
            for i in range(start, start + count)]


def _sqlite_result(driver: str, rows_per_commit: int, commits: int, wall_s: float) -> dict:
    return {"driver": driver, "rows_per_commit": rows_per_commit, "commits": commits,
            "commits_per_s": round(commits / wall_s, 1),
            "rows_per_s": round(commits * rows_per_commit / wall_s, 1)}


async def measure_aiosqlite(path: Path, rows_per_commit: int, duration_s: float) -> dict:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        for pragma in PRAGMAS:
            await db.execute(f"PRAGMA {pragma}")
        await db.execute(CREATE_TABLE)
        commits = 0
        started = time.perf_counter()
        end = started + duration_s
        while time.perf_counter() < end:
            rows = _rows(commits * rows_per_commit, rows_per_commit)
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(INSERT, rows)
            await db.execute("COMMIT")
            commits += 1
        wall_s = time.perf_counter() - started
    return _sqlite_result("aiosqlite", rows_per_commit, commits, wall_s)


def measure_sqlite3(path: Path, rows_per_commit: int, duration_s: float) -> dict:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            db.execute(f"PRAGMA {pragma}")
        db.execute(CREATE_TABLE)
        commits = 0
        started = time.perf_counter()
        end = started + duration_s
        while time.perf_counter() < end:
            rows = _rows(commits * rows_per_commit, rows_per_commit)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, rows)
            db.execute("COMMIT")
            commits += 1
        wall_s = time.perf_counter() - started
    finally:
        db.close()
    return _sqlite_result("sqlite3", rows_per_commit, commits, wall_s)


async def measure_unary_cpu(pid: int, target: str, request: bytes, concurrency: int,
                             duration_s: float) -> dict:
    """measure_unary, with the no-op server's CPU per call (as Pay's is taken)."""
    before = cpu_s(pid)
    result = await measure_unary(target, UNARY_METHOD, lambda _: request, concurrency, duration_s)
    result["server_cpu_us_per_call"] = round(
        (cpu_s(pid) - before) * 1e6 / (result["calls"] + concurrency))
    return result


async def run(duration_s: float, concurrency_levels: list[int]) -> dict:
    pay_request, pay_response = pay_payloads()
    chunk = _batch_chunk()
    server = NoopServer(pay_response)
    try:
        target = f"127.0.0.1:{server.port}"
        unary = [await measure_unary_cpu(server.pid, target, pay_request, level, duration_s)
                 for level in concurrency_levels]
        # The same open loop as Pay's, at half of this server's peak: what
        # the load generator and the machine alone do to the tail.
        unary_at_half_peak = await measure_unary_at_rate(
            target, UNARY_METHOD, lambda _: pay_request,
            max(level["qps"] for level in unary) / 2, duration_s)
        stream = await measure_stream(target, chunk, duration_s)
    finally:
        server.stop()
    sqlite_results = []
    with tempfile.TemporaryDirectory() as folder:
        for rows_per_commit in (1, GROUP_COMMIT_ROWS):
            sqlite_results.append(await measure_aiosqlite(
                Path(folder) / f"aiosqlite-{rows_per_commit}.sqlite3", rows_per_commit, duration_s))
            sqlite_results.append(measure_sqlite3(
                Path(folder) / f"sqlite3-{rows_per_commit}.sqlite3", rows_per_commit, duration_s))
    return {
        "duration_s": duration_s, "cpu_count": os.cpu_count(),
        "grpc_version": grpc.__version__, "sqlite_version": sqlite3.sqlite_version,
        "payload_bytes": {"pay_request": len(pay_request), "pay_response": len(pay_response),
                          "batch_chunk": len(chunk)},
        "unary": unary, "unary_at_half_peak": unary_at_half_peak, "bidi_stream": stream, "sqlite": sqlite_results,
    }


def markdown_table(result: dict) -> str:
    sizes = result["payload_bytes"]
    lines = [
        f"Ceilings: {result['duration_s']} s per measurement, {result['cpu_count']} CPUs, "
        f"grpc {result['grpc_version']}, SQLite {result['sqlite_version']}",
        "",
        "| ceiling | setting | rate | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for level in result["unary"]:
        lines.append(f"| no-op unary ({sizes['pay_request']} B in, {sizes['pay_response']} B out) "
                     f"| {level['concurrency']} in flight | {level['qps']:,.0f} calls/s "
                     f"| {level['p50_ms']:.2f} | {level['p99_ms']:.2f} |")
    half = result["unary_at_half_peak"]
    lines.append(f"| no-op unary, open loop at half of its peak "
                 f"| {half['target_rate_per_s']:,.0f} calls/s offered | {half['achieved_qps']:,.0f} calls/s "
                 f"| {half['p50_ms']:.2f} | {half['p99_ms']:.2f} |")
    stream = result["bidi_stream"]
    lines.append(f"| no-op bidi echo ({sizes['batch_chunk']:,} B messages) "
                 f"| {stream['transactions_per_message']} tx/message "
                 f"| {stream['items_per_s']:,.0f} items/s | | |")
    for row in result["sqlite"]:
        lines.append(f"| SQLite WAL, synchronous=FULL, {row['driver']} "
                     f"| {row['rows_per_commit']} rows/commit | {row['rows_per_s']:,.0f} rows/s "
                     f"({row['commits_per_s']:,.0f} commits/s) | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", default="1,8,32,128",
                        help="comma-separated in-flight unary calls, one level each")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    if not 0 < args.duration_s <= MAX_DURATION_S:
        parser.error(f"--duration-s must be in (0, {MAX_DURATION_S}]")
    if not levels or not all(1 <= level <= MAX_CONCURRENCY for level in levels):
        parser.error(f"--concurrency levels must be in [1, {MAX_CONCURRENCY}]")
    result = asyncio.run(run(args.duration_s, levels))
    print(json.dumps(result) if args.json else markdown_table(result))


if __name__ == "__main__":
    main()
