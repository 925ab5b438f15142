"""The event log's chaos runs at length (issue 16): Pays, asynchronous Pays,
refunds and a batch while the server (SQLite), or one of two PostgreSQL
replicas (the relay leader at even kills), is SIGKILLed at seeded points and
restarted; a WatchEvents consumer writes every delivery to a file before
moving its cursor, and a consumer of the servers' RabbitMQ relay (a vhost of
each run's own; RabbitMQ at 127.0.0.1:5672, rabbitmqctl as root) before
acking. After each run, for both consumers, every aggregate's delivered
versions must be exactly 1..its final
version, first deliveries in order, the last payload equal to GetPayment /
GetBatch, every seq ListEvents lists delivered. Duplicates are counted, not
failed. See tests/support/event_chaos_scenario.py (the suite runs a small
run of the same code: tests/reliability/test_event_chaos.py). Usage (after
scripts/setup):
  .venv/bin/python scripts/reliability_events.py [--seconds 180] [--seed 1]
      [--engine sqlite|postgresql|both] [--payments 300] [--kills 5]
      [--batch-items 600] [--concurrency 16] [--keep]
Runs follow each other until --seconds have passed (at least one per
engine); run r uses seed `seed + r`, so any run can be repeated alone with
`--seconds 0 --seed <its seed>`. On PostgreSQL the calls go to both replicas,
the killed one included: a payment it left PROCESSING is taken over after
90 s (HANDOFF_AFTER_MS), so a run lasts at least that. Exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scenario lives with the test that runs it too

from tests.support.event_chaos_scenario import (EventChaosConfig, EventChaosRun,  # noqa: E402
                                                run_event_chaos)
from tests.support.rabbitmq import rabbitmq_unavailable_reason  # noqa: E402

RUN_TIMEOUT_S = 1_800  # a run that hangs is a finding, not a wait without end
COLUMNS = ("engine", "runs", "kills", "leader kills", "payments", "events",
           "watch deliveries", "rabbitmq deliveries", "lost",
           "out of order", "stale", "seq gaps", "problems", "duplicates", "consumer restarts",
           "wall s")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="per engine")
    parser.add_argument("--seed", type=int, default=1, help="run r uses seed + r")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--payments", type=int, default=300, help="Pay calls per run")
    parser.add_argument("--kills", type=int, default=5, help="kills per run")
    parser.add_argument("--batch-items", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16, help="Pay calls in flight")
    parser.add_argument("--keep", action="store_true",
                        help="keep every run's files (failed runs are kept)")
    return parser.parse_args()


def add(row: dict, run: EventChaosRun, payments: int) -> None:
    verdict = run.verdict
    row["runs"] += 1
    row["kills"] += len(run.kills)
    row["leader kills"] += run.kill_kinds["relay leader"]
    row["payments"] += payments
    row["events"] += verdict.events
    for consumer in ("watch", "rabbitmq"):
        row[f"{consumer} deliveries"] += verdict.by_consumer.get(consumer, 0)
    for column, found in (("lost", verdict.lost), ("out of order", verdict.out_of_order),
                          ("stale", verdict.stale), ("seq gaps", verdict.seq_gaps),
                          ("problems", verdict.problems + run.problems)):
        row[column] += len(found)
    row["duplicates"] += verdict.duplicates
    row["consumer restarts"] += run.consumer_restarts
    row["wall s"] += run.wall_s


def table(rows: list[dict]) -> str:
    cells = [[f"{row[c]:,.0f}" if isinstance(row[c], (int, float)) else row[c]
              for c in COLUMNS] for row in rows]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


async def main() -> int:
    args = arguments()
    if (reason := rabbitmq_unavailable_reason()) is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    engines = ("sqlite", "postgresql") if args.engine == "both" else (args.engine,)
    workdir = Path(tempfile.mkdtemp(prefix="paygrid-events-"))
    print(f"{', '.join(engines)}: {args.seconds:.0f} s each, runs of {args.payments:,} Pay "
          f"calls, {args.batch_items:,} batch items and {args.kills} kills from seed "
          f"{args.seed}; work files in {workdir}", flush=True)
    rows, failed = [], []
    for engine in engines:
        row = dict.fromkeys(COLUMNS, 0)
        row["engine"] = engine
        config = EventChaosConfig(engine=engine, payments=args.payments, kills=args.kills,
                                  batch_items=args.batch_items, concurrency=args.concurrency)
        started, seed = time.perf_counter(), args.seed
        while row["runs"] == 0 or time.perf_counter() - started < args.seconds:
            where = workdir / f"{engine}-{seed}"
            try:
                run = await asyncio.wait_for(run_event_chaos(seed, where, config), RUN_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a broken run is reported; the others still run
                traceback.print_exc()
                failed.append(f"{engine} {seed}")
                row["runs"] += 1
                row["problems"] += 1
            else:
                print(run.describe(), flush=True)
                add(row, run, args.payments)
                if not run.ok:
                    failed.append(f"{engine} {seed}")
                elif not args.keep:
                    shutil.rmtree(where, ignore_errors=True)
            seed += 1
        rows.append(row)
    print(table(rows))
    if failed:
        print(f"FAILED: {', '.join(failed)}; their deliveries and server logs are in {workdir}")
        return 1
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print("OK: every event delivered, in order per aggregate, the last equal to the final state")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
