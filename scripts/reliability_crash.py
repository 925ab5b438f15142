"""Crash runs at full size: SIGKILL paygrid during a batch and during streams
of Pay calls, restart, resubmit; the channels' ledgers must equal what paygrid
recorded: 0 lost, 0 duplicated. See tests/support/crash_batch_scenario.py and
tests/support/crash_pay_scenario.py (the test suite runs a small subset of the same
code, tests/reliability/test_reliability_crash.py). Usage (after scripts/setup):
  .venv/bin/python scripts/reliability_crash.py [--runs 20] [--seed 1]
      [--items 100000] [--payments 2000] [--max-kills 3] [--keep]
      [--group-size 100] [--per-message 500] [--parallelism 4] [--channel-latency-ms 50]
      [--workers 2 [--engine sqlite]]
With --workers N (N > 1) the server is `serve --workers N` on PostgreSQL (a
fresh schema per run in PAYGRID_TEST_POSTGRES_DSN's database) or, with
--engine sqlite, on one SQLite file the workers share, and each kill
SIGKILLs one worker, which its supervisor starts again: during Pay, each
client on a connection of its own, the workers in turn (a killed worker's
payments are handed over after HANDOFF_AFTER_MS: about 90 s a kill); during
a batch, the worker running its stream (every worker before it is stored).
Each run also reports the voids left in the channels' ledgers: captures
voided (a reversal the payee sees) and keys fenced, per kill.
Run r uses seed `seed + r`, so any run can be repeated alone with
`--runs 1 --seed <its seed>`. Exits 1 on any difference.
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
sys.path.insert(0, str(ROOT))  # the scenarios live with the tests that run them too

from tests.support.crash_batch_scenario import BatchCrashConfig, run_batch_crash  # noqa: E402
from tests.support.crash_pay_scenario import PayCrashConfig, run_pay_crash  # noqa: E402

SCENARIO_TIMEOUT_S = 3_600  # a run that hangs is a finding, not a wait without end


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="run r uses seed + r")
    parser.add_argument("--items", type=int, default=100_000, help="batch items per run (0: none)")
    parser.add_argument("--payments", type=int, default=2_000,
                        help="Pay calls per run (0: none)")
    parser.add_argument("--max-kills", type=int, default=3, help="kills per scenario: 1 to this")
    parser.add_argument("--concurrency", type=int, default=32, help="Pay calls in flight")
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--per-message", type=int, default=500, help="batch items per message")
    parser.add_argument("--parallelism", type=int, default=4, help="batch groups charged at once")
    parser.add_argument("--channel-latency-ms", type=float, default=None,
                        help="the simulators' latency (default: each scenario's own)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (more than 1: see --engine)")
    parser.add_argument("--engine", choices=("postgresql", "sqlite"), default="postgresql",
                        help="with --workers: the database the workers share (one server "
                             "is always on SQLite)")
    parser.add_argument("--keep", action="store_true",
                        help="keep every run's database and server log (failed runs are kept)")
    return parser.parse_args()


async def main() -> int:
    args = arguments()
    latency = ({} if args.channel_latency_ms is None
               else {"channel_latency_ms": args.channel_latency_ms})
    batch = BatchCrashConfig(items=args.items, max_group_size=args.group_size,
                             per_message=args.per_message, parallelism=args.parallelism,
                             max_kills=args.max_kills, workers=args.workers, engine=args.engine,
                             **latency)
    pay = PayCrashConfig(payments=args.payments, concurrency=args.concurrency,
                         max_kills=args.max_kills, workers=args.workers, engine=args.engine,
                         **latency)
    workdir = Path(tempfile.mkdtemp(prefix="paygrid-crash-"))
    # lost, duplicated, mismatched: the clients' view (tests/support/exactly_once.py);
    # books_differences: the database's (ledger_reconciliation.py).
    totals = dict(runs=0, kills=0, items=0, payments=0, legs=0, captures=0, lost=0,
                  duplicated=0, mismatched=0, books_differences=0, problems=0,
                  batch_kills=0, batch_voided_captures=0, batch_fences=0, pay_kills=0,
                  pay_voided_captures=0, pay_fences=0, pay_interrupted_legs=0)
    failed = []
    started = time.perf_counter()
    print(f"{args.runs} runs from seed {args.seed}: {args.items:,} batch items and "
          f"{args.payments:,} Pay calls each, 1 to {args.max_kills} kills per scenario; "
          f"work files in {workdir}", flush=True)
    for r in range(args.runs):
        seed = args.seed + r
        results = []
        print(f"run {r + 1}/{args.runs}", flush=True)
        try:
            if args.items:
                results.append(await asyncio.wait_for(
                    run_batch_crash(seed, workdir / f"batch-{seed}", batch), SCENARIO_TIMEOUT_S))
                totals["items"] += args.items
            if args.payments:
                results.append(await asyncio.wait_for(
                    run_pay_crash(seed, workdir / f"pay-{seed}", pay), SCENARIO_TIMEOUT_S))
                totals["payments"] += args.payments
                totals["legs"] += results[-1].legs
        except Exception:  # noqa: BLE001 - a broken run is reported; the others still run
            traceback.print_exc()
            totals["problems"] += 1
            failed.append(seed)
        totals["runs"] += 1
        for result in results:
            print("  " + result.describe().replace("\n", "\n  "), flush=True)
            totals["kills"] += result.kill_count
            totals["captures"] += result.exactly_once.captures
            totals["lost"] += len(result.exactly_once.lost)
            totals["duplicated"] += len(result.exactly_once.duplicated)
            totals["mismatched"] += len(result.exactly_once.mismatched)
            totals["books_differences"] += len(result.books.violations)
            totals["problems"] += len(result.problems)
            scenario = "pay" if hasattr(result, "interrupted_legs") else "batch"
            totals[f"{scenario}_kills"] += result.kill_count
            totals[f"{scenario}_voided_captures"] += result.voided_captures
            totals[f"{scenario}_fences"] += result.fences
            if scenario == "pay":
                totals["pay_interrupted_legs"] += result.interrupted_legs
            if not result.ok:
                failed.append(seed)
        if seed not in failed and not args.keep:
            for scenario in ("batch", "pay"):
                shutil.rmtree(workdir / f"{scenario}-{seed}", ignore_errors=True)
    wall_s = time.perf_counter() - started
    print("totals: " + ", ".join(f"{name} {value:,}" for name, value in totals.items())
          + f"; wall {wall_s / 60:.1f} min")
    if failed:
        print(f"FAILED: seeds {sorted(set(failed))}; their databases and server logs are in "
              f"{workdir}")
        return 1
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print("OK: every capture at the channels is a charge paygrid recorded, once")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
