"""What the event log (issue 16's outbox) costs Pay and SubmitBatch: the
same bench against this tree ("with events") and against the commit before
the event log landed ("without"), in one run on one machine.

Why that baseline: the event log is written in the transaction of every
change, and paygrid has (and must have) no switch that drops it; stubbing
the event writes out in the bench would measure code nobody runs. The
parent of "Merge events" (d38ff4b) is the same code without the outbox:
what changed in between is the outbox and what serves it. Its files come
from `git archive` (bench_baseline_tree.py), run on this tree's virtualenv.

Judged by the server's CPU seconds per call (from /proc; robust to other
work on the machine), each figure the median of `rounds` runs, the two
trees interleaved so drifting background load hits both alike. Usage:
  .venv/bin/python scripts/bench_event_cost.py [--rounds 3] [--duration-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys

import bench_batch
import bench_pay_load
from bench_baseline_tree import baseline_tree, imported_from

BEFORE_EVENT_LOG = "d38ff4b^1"  # main before "Merge events" (issue 16's event log)
TARGET_CPU_RATIO = 1.15  # Pay with events at most 15% more server CPU than without


async def _pay(extra_env: dict[str, str] | None, levels: list[int], duration_s: float) -> dict:
    result = await bench_pay_load.run(duration_s, levels, channel_called_directly=True,
                                      half_peak_rate=False, extra_env=extra_env)
    return {"levels": result["levels"]}


async def _batch(extra_env: dict[str, str] | None, items: int) -> dict:
    return await bench_batch.run(items, min(500, items), 100, 4, extra_env=extra_env)


def _median(runs: list[dict], pick) -> float:
    return round(statistics.median(pick(run) for run in runs), 1)


def _summary(runs: list[dict], batch_runs: list[dict], cpu_level: int) -> dict:
    def at(level: int):
        return lambda run: next(lv for lv in run["levels"] if lv["concurrency"] == level)
    return {
        "pay_cpu_us_per_call": _median(runs, lambda r: at(cpu_level)(r)["server_cpu_us_per_call"]),
        "pay_peak_qps": _median(runs, lambda r: max(lv["qps"] for lv in r["levels"])),
        "batch_cpu_us_per_item": _median(batch_runs, lambda r: r["server_cpu_us_per_item"]),
        "batch_items_per_s": _median(batch_runs, lambda r: r["client_items_per_s"]),
        "pay_runs": runs, "batch_runs": batch_runs,
    }


async def run(duration_s: float, levels: list[int], rounds: int, batch_items: int,
              baseline: str = BEFORE_EVENT_LOG) -> dict:
    """levels: Pay concurrencies (the CPU figure is taken at 32 when measured,
    else at the first); the peak is the best of them."""
    cpu_level = 32 if 32 in levels else levels[0]
    with baseline_tree(baseline) as without_env:
        assert "paygrid-baseline-" in str(imported_from(without_env))
        trees = {"with_events": None, "without_events": without_env}
        pay = {name: [] for name in trees}
        batch = {name: [] for name in trees}
        for round_no in range(rounds):
            # Alternate which goes first: a slow patch of the machine hits both.
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                print(f"event log cost: {name}, round {round_no + 1}/{rounds}", file=sys.stderr)
                pay[name].append(await _pay(trees[name], levels, duration_s))
                batch[name].append(await _batch(trees[name], batch_items))
    result = {name: _summary(pay[name], batch[name], cpu_level) for name in trees}
    with_, without = result["with_events"], result["without_events"]
    # Each round's two runs ran back to back: their ratio is paired, less
    # exposed to what the rest of the machine did meanwhile.
    cpu = {name: [next(lv for lv in run["levels"] if lv["concurrency"] == cpu_level)
                  ["server_cpu_us_per_call"] for run in pay[name]] for name in trees}
    paired = sorted(round(w / wo, 3) for w, wo in zip(cpu["with_events"], cpu["without_events"]))
    result.update({
        "baseline": baseline, "rounds": rounds, "cpu_level": cpu_level,
        "batch_items": batch_items,
        "pay_cpu_ratio": round(with_["pay_cpu_us_per_call"] / without["pay_cpu_us_per_call"], 3),
        "pay_cpu_us_per_call_by_round": cpu, "pay_cpu_ratio_by_round": paired,
        "pay_cpu_ratio_paired_median": statistics.median(paired),
        "pay_peak_ratio": round(with_["pay_peak_qps"] / without["pay_peak_qps"], 3),
        "batch_cpu_ratio": round(with_["batch_cpu_us_per_item"]
                                 / without["batch_cpu_us_per_item"], 3),
    })
    return result


def markdown(result: dict, noop_cpu_us_per_call: float | None) -> str:
    w, wo = result["with_events"], result["without_events"]
    noop = f"{noop_cpu_us_per_call:,.0f}" if noop_cpu_us_per_call else "n/a"
    return "\n".join([
        f"Without events: this bench against `{result['baseline']}` (the commit before the "
        f"event log), same virtualenv; median of {result['rounds']} interleaved runs; "
        f"server CPU per call from /proc at {result['cpu_level']} in flight; the no-op "
        f"unary server's CPU per call in this run: {noop} µs.", "",
        "| figure | with events | without | ratio |", "|---|---:|---:|---:|",
        f"| Pay server CPU µs per call | {w['pay_cpu_us_per_call']:,.0f} "
        f"| {wo['pay_cpu_us_per_call']:,.0f} | {result['pay_cpu_ratio']:.2f} |",
        f"| Pay server CPU, ratio of each round's pair (sorted) | | "
        f"| {', '.join(f'{r:.2f}' for r in result['pay_cpu_ratio_by_round'])} |",
        f"| Pay peak calls/s | {w['pay_peak_qps']:,.0f} | {wo['pay_peak_qps']:,.0f} "
        f"| {result['pay_peak_ratio']:.2f} |",
        f"| SubmitBatch {result['batch_items']:,} items: server CPU µs per item "
        f"| {w['batch_cpu_us_per_item']:,.1f} | {wo['batch_cpu_us_per_item']:,.1f} "
        f"| {result['batch_cpu_ratio']:.2f} |",
        f"| SubmitBatch {result['batch_items']:,} items: items/s | {w['batch_items_per_s']:,.0f} "
        f"| {wo['batch_items_per_s']:,.0f} | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", default="32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-items", type=int, default=20_000)
    parser.add_argument("--baseline", default=BEFORE_EVENT_LOG)
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    result = asyncio.run(run(args.duration_s, levels, args.rounds, args.batch_items,
                             args.baseline))
    print(markdown(result, None))
    print(json.dumps({k: v for k, v in result.items() if k not in ("with_events", "without_events")}
                     | {name: {k: v for k, v in result[name].items() if not k.endswith("_runs")}
                        for name in ("with_events", "without_events")}))


if __name__ == "__main__":
    main()
