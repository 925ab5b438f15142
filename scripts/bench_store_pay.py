"""The SQLite payment store alone, per Pay: insert_payment (PROCESSING, the
key taken), then save_payment_outcome (the leg and the payment SUCCEEDED),
`concurrency` payments at a time through the real writer (group commit,
synchronous=FULL) on a throw-away file. Measures this process's CPU per Pay
(time.process_time: every thread, the writer's too): no gRPC, no channel,
so what a change to the store saves shows without the server around it.
Runs whichever paygrid_server is imported: with bench_baseline_tree's
PYTHONPATH, an older commit's store. Usage (after scripts/setup):
  .venv/bin/python scripts/bench_store_pay.py [--payments 3000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import tempfile
import time
import uuid
from pathlib import Path

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Leg, LegRequest, LegStatus, Payment, PaymentMode, PaymentStatus)
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore

try:  # ids as the server makes them: their order decides which index pages a commit dirties
    from paygrid_server.domain.model.time_ordered_ids import uuid7_hex as payment_id_hex
except ImportError:  # an older tree (bench_baseline_tree): its payment ids were uuid4
    def payment_id_hex() -> str:
        return uuid.uuid4().hex


class _WorkClock:
    """CPU time (of the writer thread) spent inside the store's units of
    work, COMMIT and the hand-back excluded: the part a change to the
    store's statements and event rows moves, with less noise than the
    process's total."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.cpu_s = 0.0
        write = database.write

        async def timed_write(work):
            def timed(db):
                started = time.thread_time()
                try:
                    return work(db)
                finally:
                    self.cpu_s += time.thread_time() - started
            return await write(timed)

        database.write = timed_write  # this bench's database object only


def _store(database: SqliteDatabase) -> SqlitePaymentStore:
    # Before the event log the store took the database only.
    if "encoder" in inspect.signature(SqlitePaymentStore).parameters:
        from paygrid_server.transport.event_messages import ProtobufSnapshots
        return SqlitePaymentStore(database, ProtobufSnapshots())
    return SqlitePaymentStore(database)


def _payment(n: int) -> Payment:
    return Payment(
        payment_id=f"pay_{payment_id_hex()}", tenant_id="dev", idempotency_key=f"k{n}",
        fingerprint="f" * 64, payer="acct_bench_0001", mode=PaymentMode.ALL_OR_NOTHING,
        legs=[Leg(0, LegRequest("merchant_0000", Money("USD", 100), "", ""),
                  first_channel="card")],
        metadata={}, received_at_us=clock.now_us())


async def _one_pay(store: SqlitePaymentStore, n: int) -> None:
    payment = _payment(n)
    assert await store.insert_payment(payment) is None
    leg = payment.legs[0]
    leg.status, leg.channel, leg.channel_reference = LegStatus.SUCCEEDED, "card", f"ch_{n}"
    leg.attempts, leg.latency_us = 1, 150
    payment.status, payment.completed_at_us = PaymentStatus.SUCCEEDED, clock.now_us()
    await store.save_payment_outcome(payment)


async def run(payments: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        database = await SqliteDatabase.open(Path(folder) / "store.sqlite3")
        try:
            clock_ = _WorkClock(database)
            store = _store(database)
            await asyncio.gather(*(_one_pay(store, -i - 1) for i in range(concurrency)))  # warm-up
            queue = iter(range(payments))

            async def worker() -> None:
                for n in queue:
                    await _one_pay(store, n)

            clock_.cpu_s = 0.0
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
            work_s = clock_.cpu_s
        finally:
            await database.close()
    return {"payments": payments, "concurrency": concurrency,
            "cpu_us_per_pay": round(cpu_s * 1e6 / payments, 1),
            "work_cpu_us_per_pay": round(work_s * 1e6 / payments, 1),
            "pays_per_s": round(payments / wall_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.payments, args.concurrency))))


if __name__ == "__main__":
    main()
