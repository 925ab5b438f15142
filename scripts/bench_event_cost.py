"""What the event log (issue 16's outbox) costs Pay and SubmitBatch: the
same load against this tree ("with events") and against the commit before
the event log landed ("without"), in one run on one machine.

Why that baseline: the event log is written in the transaction of every
change, and paygrid has (and must have) no switch that drops it; stubbing
the event writes out in the bench would measure code nobody runs. The
parent of "Merge events" (d38ff4b) is the same code without the outbox:
what changed in between is the outbox and what serves it. Its files come
from `git archive` (bench_baseline_tree.py), run on this tree's virtualenv.

How, so that other work on the machine does not decide the ratio:
- server CPU per Pay: both servers run side by side, each driven at the
  same concurrency over the same seconds by one load generator process
  (niced), and each server's CPU seconds come from /proc: whatever the
  machine does meanwhile, it does to both;
- peak calls/s: each server alone at 128 in flight, in turn;
- SubmitBatch: server CPU per item, each alone, in turn;
each the median of `rounds`, the order alternating. Usage:
  .venv/bin/python scripts/bench_event_cost.py [--rounds 3] [--duration-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import uuid
from contextlib import AsyncExitStack, ExitStack

import bench_batch
from bench_baseline_tree import baseline_tree, imported_from
from bench_load import measure_unary
from bench_pay_load import PAY_METHOD, check_succeeded, pay_request_maker
from bench_server import AUTH_METADATA, cpu_s, paygrid_server

BEFORE_EVENT_LOG = "d38ff4b^1"  # main before "Merge events" (issue 16's event log)
TARGET_CPU_RATIO = 1.15  # Pay with events at most 15% more server CPU than without
PEAK_CONCURRENCY = 128
DRIVER_NICENESS = 10


def _drive(targets: list[str], concurrency: int, duration_s: float) -> list[dict]:
    """Pay load on every target at once, from a process of its own, niced:
    the load generator yields the cores to the servers it measures."""
    # `nice` the command, not preexec_fn: this process runs gRPC threads, and
    # a fork that runs Python code in the child is unsafe with threads.
    out = subprocess.run(
        ["nice", "-n", str(DRIVER_NICENESS), sys.executable, __file__, "--drive",
         ",".join(targets), "--concurrency", str(concurrency), "--duration-s", str(duration_s)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


async def _drive_all(targets: list[str], concurrency: int, duration_s: float) -> list[dict]:
    return list(await asyncio.gather(*(measure_unary(
        target, PAY_METHOD, pay_request_maker(uuid.uuid4().hex[:8]), concurrency, duration_s,
        AUTH_METADATA, check_succeeded) for target in targets)))


async def _pay_round(trees: dict, concurrency: int, duration_s: float) -> dict[str, dict]:
    """Side by side: CPU per call of each server under the same load."""
    async with AsyncExitStack() as stack:
        servers = {name: await stack.enter_async_context(paygrid_server(
            in_process_channel_latency_ms=0, channel_called_directly=True, extra_env=env))
            for name, env in trees.items()}
        before = {name: cpu_s(server.pid) for name, server in servers.items()}
        results = _drive([server.target for server in servers.values()], concurrency, duration_s)
        by_name = dict(zip(servers, results))
        for name, server in servers.items():
            result = by_name[name]  # the warm-up calls are on the CPU bill too
            result["server_cpu_us_per_call"] = round(
                (cpu_s(server.pid) - before[name]) * 1e6 / (result["calls"] + concurrency))
    return by_name


async def _peak(env: dict[str, str] | None, duration_s: float) -> float:
    async with paygrid_server(in_process_channel_latency_ms=0, channel_called_directly=True,
                              extra_env=env) as server:
        return _drive([server.target], PEAK_CONCURRENCY, duration_s)[0]["qps"]


async def run(duration_s: float, concurrency: int, rounds: int, batch_items: int,
              baseline: str = BEFORE_EVENT_LOG, events_commit: str | None = None) -> dict:
    """events_commit: measure that commit as "with events" instead of this
    tree (before/after figures of a change, in one run)."""
    with ExitStack() as trees_built:
        without_env = trees_built.enter_context(baseline_tree(baseline))
        with_env = trees_built.enter_context(baseline_tree(events_commit)) \
            if events_commit else None
        assert "paygrid-baseline-" in str(imported_from(without_env))
        trees = {"with_events": with_env, "without_events": without_env}
        runs = {name: {"cpu": [], "qps": [], "peak": [], "batch": []} for name in trees}
        for round_no in range(rounds):
            print(f"event log cost: round {round_no + 1}/{rounds}", file=sys.stderr)
            for name, result in (await _pay_round(trees, concurrency, duration_s)).items():
                runs[name]["cpu"].append(result["server_cpu_us_per_call"])
                runs[name]["qps"].append(result["qps"])
            # Alternate which goes first: a slow patch of the machine hits both.
            for name in (list(trees) if round_no % 2 == 0 else list(reversed(trees))):
                runs[name]["peak"].append(await _peak(trees[name], duration_s))
                runs[name]["batch"].append(await bench_batch.run(
                    batch_items, min(500, batch_items), 100, 4, extra_env=trees[name]))
    result = {"baseline": baseline, "events_commit": events_commit or "this tree", "rounds": rounds, "concurrency": concurrency,
              "batch_items": batch_items, "duration_s": duration_s}
    for name, r in runs.items():
        result[name] = {
            "pay_cpu_us_per_call": statistics.median(r["cpu"]),
            "pay_qps_side_by_side": statistics.median(r["qps"]),
            "pay_peak_qps": statistics.median(r["peak"]),
            "batch_cpu_us_per_item": statistics.median(b["server_cpu_us_per_item"] for b in r["batch"]),
            "batch_items_per_s": statistics.median(b["client_items_per_s"] for b in r["batch"]),
            "by_round": {"pay_cpu_us_per_call": r["cpu"], "pay_peak_qps": r["peak"],
                         "batch_cpu_us_per_item": [b["server_cpu_us_per_item"] for b in r["batch"]]},
        }
    w, wo = result["with_events"], result["without_events"]
    result["pay_cpu_ratio_by_round"] = sorted(
        round(a / b, 3) for a, b in zip(w["by_round"]["pay_cpu_us_per_call"],
                                        wo["by_round"]["pay_cpu_us_per_call"]))
    result["pay_cpu_ratio"] = round(statistics.median(result["pay_cpu_ratio_by_round"]), 3)
    result["pay_cpu_ratio_met"] = result["pay_cpu_ratio"] <= TARGET_CPU_RATIO
    result["pay_peak_ratio"] = round(w["pay_peak_qps"] / wo["pay_peak_qps"], 3)
    result["batch_cpu_ratio"] = round(w["batch_cpu_us_per_item"] / wo["batch_cpu_us_per_item"], 3)
    return result


def markdown(result: dict, noop_cpu_us_per_call: float | None = None) -> str:
    w, wo = result["with_events"], result["without_events"]
    noop = (f"; the no-op unary server's CPU per call in this run: {noop_cpu_us_per_call:,.0f} µs"
            if noop_cpu_us_per_call else "")
    items = f"{result['batch_items']:,}"
    return "\n".join([
        f"With events: {result['events_commit']}. Without events: `{result['baseline']}` (the commit before the event log), same "
        f"virtualenv. Medians of {result['rounds']} rounds; server CPU per Pay with both "
        f"servers side by side at {result['concurrency']} in flight each (ratio: the median "
        f"of each round's pair){noop}.", "",
        "| figure | with events | without | with / without |", "|---|---:|---:|---:|",
        f"| Pay server CPU µs per call | {w['pay_cpu_us_per_call']:,.0f} "
        f"| {wo['pay_cpu_us_per_call']:,.0f} | {result['pay_cpu_ratio']:.2f} (rounds: "
        f"{', '.join(f'{r:.2f}' for r in result['pay_cpu_ratio_by_round'])}; target <= "
        f"{TARGET_CPU_RATIO:.2f}: {'met' if result['pay_cpu_ratio_met'] else 'NOT met'}) |",
        f"| Pay calls/s side by side | {w['pay_qps_side_by_side']:,.0f} "
        f"| {wo['pay_qps_side_by_side']:,.0f} | |",
        f"| Pay peak calls/s (alone, {PEAK_CONCURRENCY} in flight) | {w['pay_peak_qps']:,.0f} "
        f"| {wo['pay_peak_qps']:,.0f} | {result['pay_peak_ratio']:.2f} |",
        f"| SubmitBatch {items} items: server CPU µs per item | {w['batch_cpu_us_per_item']:,.1f} "
        f"| {wo['batch_cpu_us_per_item']:,.1f} | {result['batch_cpu_ratio']:.2f} |",
        f"| SubmitBatch {items} items: items/s | {w['batch_items_per_s']:,.0f} "
        f"| {wo['batch_items_per_s']:,.0f} | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-items", type=int, default=20_000)
    parser.add_argument("--baseline", default=BEFORE_EVENT_LOG)
    parser.add_argument("--events-commit", help="measure this commit as \"with events\" "
                                                "(default: this tree)")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: the load generator
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(_drive_all(args.drive.split(","), args.concurrency,
                                                args.duration_s))))
        return
    result = asyncio.run(run(args.duration_s, args.concurrency, args.rounds, args.batch_items,
                             args.baseline, args.events_commit))
    print(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
