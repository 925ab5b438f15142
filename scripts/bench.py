"""paygrid against its ceilings, in one run on one machine.

1. ceilings: no-op grpc.aio unary server and no-op bidi echo stream (same
   messages, same load generator), raw SQLite commit rates;
2. Pay: throughput and p50/p99 by concurrency, 1 leg, 0-latency in-process
   simulator, durable and idempotent; p99 at half of peak load (open loop);
   3 legs x 100 ms channel latency (wall time per payment);
3. SubmitBatch: items/s for each batch size, chunked and one item per
   message; APT; the server's peak RSS;
4. events: WatchEvents following the log under Pay load, and replaying the
   backlog (bench_events.py); the RabbitMQ relay following Pay load and
   catching up a backlog (bench_relay.py); the event log's cost on Pay and SubmitBatch,
   against the commit before it (bench_event_cost.py).
Writes bench-results/<UTC time>.md (table, ratios to the ceilings, targets),
.json (every figure) and .png (throughput vs concurrency, RSS vs batch size).

  scripts/bench                  # full run (about 15 minutes on 2 cores)
  scripts/bench --quick          # seconds: checks the bench itself works
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import bench_batch
import bench_batch_cpu
import bench_ceilings
import bench_event_cost
import bench_events
import bench_pay_legs
import bench_pay_cpu
import bench_pay_load
from paygrid_server.logging_setup import configure_logging

ROOT = Path(__file__).resolve().parent.parent
CHUNK_TRANSACTIONS = 500  # per message when chunked, as in the echo ceiling

TARGETS = {
    "pay_qps_share_of_noop": 0.60,
    "pay_p99_ms_at_half_peak": 10.0,
    "legs_3x100ms_p50_ms": 130.0,
    "batch_share_of_ceiling": 0.50,
    "batch_cpu_us_per_item": bench_batch_cpu.TARGET_US_PER_ITEM,
    "rss_largest_over_smallest": 1.5,
    "event_log_pay_cpu_ratio": bench_event_cost.TARGET_CPU_RATIO,
    "pay_cpu_ratio": bench_pay_cpu.CPU_RATIO_TARGET,
    "pay_p99_ms_at_half_peak_node": bench_pay_cpu.P99_MS_TARGET,
}


async def measure(args: argparse.Namespace) -> dict:
    levels = [int(level) for level in args.concurrency.split(",")]
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print("ceilings...", file=sys.stderr)
    ceilings = await bench_ceilings.run(args.duration_s, levels)
    print("Pay, channel called in process...", file=sys.stderr)
    pay_direct = await bench_pay_load.run(args.duration_s, levels, channel_called_directly=True)
    print("Pay's CPU against the no-op's and the floor's, open-loop latency (Node)...",
          file=sys.stderr)
    pay_cpu = await bench_pay_cpu.run(args.duration_s, ceilings["unary"], pay_direct["levels"],
                                      measure_floor=not args.quick, rounds=args.pay_rounds)
    print("Pay, channel over loopback gRPC...", file=sys.stderr)
    pay_grpc = await bench_pay_load.run(args.duration_s, levels, channel_called_directly=False)
    print("Pay, 3 legs x 100 ms...", file=sys.stderr)
    legs = await bench_pay_legs.run(3, args.legs_latency_ms, args.legs_payments)
    batches = []
    for size in sizes:
        for per_message in (CHUNK_TRANSACTIONS, 1):
            print(f"SubmitBatch {size} items, {per_message}/message...", file=sys.stderr)
            batches.append(await bench_batch.run(size, min(per_message, size), args.group_size,
                                                 args.parallelism))
    print("the batch floor (../shared/ceilings/batch_floor.py)...", file=sys.stderr)
    batch_floor = bench_batch_cpu.floor_us_per_item(measure=not args.quick)
    print("events: WatchEvents under Pay load, replay...", file=sys.stderr)
    events = await bench_events.run(args.duration_s, args.events_concurrency)
    print("the event log's cost (against the commit before it)...", file=sys.stderr)
    event_cost = await bench_event_cost.run(args.duration_s, args.events_concurrency,
                                            args.event_cost_rounds, args.event_cost_batch_items)
    return {"ceilings": ceilings, "pay_direct": pay_direct, "pay_cpu": pay_cpu, "pay_grpc": pay_grpc,
            "legs": legs, "batches": batches, "batch_floor": batch_floor, "events": events,
            "event_cost": event_cost}


def evaluate(results: dict) -> dict:
    ceilings = results["ceilings"]
    noop_peak = max(level["qps"] for level in ceilings["unary"])
    pay_peak = max(level["qps"] for level in results["pay_direct"]["levels"])
    group_commit = max(row["rows_per_s"] for row in ceilings["sqlite"]
                       if row["driver"] == "aiosqlite" and row["rows_per_commit"] > 1)
    batch_ceiling = min(ceilings["bidi_stream"]["items_per_s"], group_commit)
    chunked = [b for b in results["batches"] if b["per_message"] > 1]
    batch_best = max(b["client_items_per_s"] for b in chunked)
    by_size = sorted(chunked, key=lambda b: b["items"])
    rss_ratio = by_size[-1]["server_rss_peak_mib"] / by_size[0]["server_rss_peak_mib"]
    half = results["pay_direct"]["at_half_peak"]
    pay_cpu = bench_pay_cpu.evaluate(results["pay_cpu"])
    figures = {
        "noop_peak_qps": noop_peak, "pay_peak_qps": pay_peak,
        "pay_qps_share_of_noop": round(pay_peak / noop_peak, 3),
        "pay_p99_ms_at_half_peak": half["p99_ms"],
        "noop_p99_ms_at_half_peak": ceilings["unary_at_half_peak"]["p99_ms"],
        "legs_3x100ms_p50_ms": results["legs"]["wall_ms_p50"],
        "group_commit_rows_per_s": group_commit,
        "batch_ceiling_items_per_s": batch_ceiling,
        "batch_best_items_per_s": batch_best,
        "batch_share_of_ceiling": round(batch_best / batch_ceiling, 4),
        "batch_cpu_us_per_item": bench_batch_cpu.worst_us_per_item(results["batches"]),
        "batch_floor_us_per_item": results["batch_floor"]["us_per_item"],
        "rss_largest_over_smallest": round(rss_ratio, 3),
        "event_log_pay_cpu_ratio": results["event_cost"]["pay_cpu_ratio"],
        **pay_cpu["figures"],
    }
    met = {
        "pay_qps_share_of_noop": figures["pay_qps_share_of_noop"] >= TARGETS["pay_qps_share_of_noop"],
        "pay_p99_ms_at_half_peak": half["p99_ms"] < TARGETS["pay_p99_ms_at_half_peak"],
        "legs_3x100ms_p50_ms": figures["legs_3x100ms_p50_ms"] < TARGETS["legs_3x100ms_p50_ms"],
        "batch_share_of_ceiling": figures["batch_share_of_ceiling"] >= TARGETS["batch_share_of_ceiling"],
        "batch_cpu_us_per_item": (figures["batch_cpu_us_per_item"]
                                  <= TARGETS["batch_cpu_us_per_item"]),
        "rss_largest_over_smallest": rss_ratio <= TARGETS["rss_largest_over_smallest"],
        "event_log_pay_cpu_ratio": results["event_cost"]["pay_cpu_ratio_met"],
        **pay_cpu["met"],
    }
    return {"figures": figures, "met": met}


def markdown(results: dict, verdict: dict, meta: dict) -> str:
    c = results["ceilings"]
    f = verdict["figures"]
    noop = {level["concurrency"]: level for level in c["unary"]}
    out = [f"# paygrid bench, {meta['started']}", "",
           f"{meta['machine']}; {meta['cpus']} CPUs; Python {meta['python']}; "
           f"grpc {c['grpc_version']}; SQLite {c['sqlite_version']}; "
           f"{meta['duration_s']} s per measurement.", "",
           "## Pay by concurrency (1 leg, 0 ms channel, durable, idempotent)", "",
           "| in flight | no-op unary calls/s | Pay calls/s (channel in process) | ratio "
           "| Pay p50 / p99 ms | Pay calls/s (channel over loopback gRPC) | ratio "
           "| p50 / p99 ms | server CPU µs per call (no-op / Pay in process / Pay gRPC) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    grpc_levels = {level["concurrency"]: level for level in results["pay_grpc"]["levels"]}
    for level in results["pay_direct"]["levels"]:
        n = level["concurrency"]
        ceiling, over_grpc = noop[n], grpc_levels[n]
        out.append(
            f"| {n} | {ceiling['qps']:,.0f} (p99 {ceiling['p99_ms']:.1f} ms) | {level['qps']:,.0f} "
            f"| {level['qps'] / ceiling['qps']:.0%} | {level['p50_ms']:.1f} / {level['p99_ms']:.1f} "
            f"| {over_grpc['qps']:,.0f} | {over_grpc['qps'] / ceiling['qps']:.0%} "
            f"| {over_grpc['p50_ms']:.1f} / {over_grpc['p99_ms']:.1f} "
            f"| {ceiling['server_cpu_us_per_call']} / {level['server_cpu_us_per_call']} "
            f"/ {over_grpc['server_cpu_us_per_call']} |")
    half = results["pay_direct"]["at_half_peak"]
    legs = results["legs"]
    noop_half = c["unary_at_half_peak"]
    out += ["", f"Open loop at half of Pay's peak ({half['target_rate_per_s']:,.0f}/s): "
                f"achieved {half['achieved_qps']:,.0f}/s, p50 {half['p50_ms']:.1f} ms, "
                f"p99 {half['p99_ms']:.1f} ms. The no-op server at half of its own peak "
                f"({noop_half['target_rate_per_s']:,.0f}/s), same load generator: p50 "
                f"{noop_half['p50_ms']:.1f} ms, p99 {noop_half['p99_ms']:.1f} ms.", "",
            f"3 legs x {legs['channel_latency_ms']:.0f} ms channel latency, {legs['payments']} "
            f"payments: wall p50 {legs['wall_ms_p50']} ms, p99 {legs['wall_ms_p99']} ms "
            f"(sequential would be {legs['sequential_would_be_ms']:.0f} ms).", "",
            "## SubmitBatch", "",
            f"Ceiling: min(no-op echo {c['bidi_stream']['items_per_s']:,.0f} items/s, "
            f"aiosqlite group commit {f['group_commit_rows_per_s']:,.0f} rows/s) "
            f"= {f['batch_ceiling_items_per_s']:,.0f} items/s.", "",
            "| items | per message | items/s | share of ceiling "
            f"| {bench_batch_cpu.column_title(results['batch_floor'])} | APT ms | groups "
            "| server RSS start -> peak MiB | wall s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in results["batches"]:
        out.append(f"| {b['items']:,} | {b['per_message']} | {b['client_items_per_s']:,.0f} "
                   f"| {b['client_items_per_s'] / f['batch_ceiling_items_per_s']:.1%} "
                   f"| {b['server_cpu_us_per_item']} "
                   f"| {b['apt_ms']:.1f} | {b['groups']:,} | {b['server_rss_start_mib']} -> "
                   f"{b['server_rss_peak_mib']} | {b['wall_s']} |")
    noop_cpu = next((lv["server_cpu_us_per_call"] for lv in c["unary"]
                     if lv["concurrency"] == results["event_cost"]["concurrency"]), None)
    out += ["", "## Issue 17: Pay's server CPU and latency", "",
            bench_pay_cpu.markdown(results["pay_cpu"])]
    out += ["", "## Events", "", bench_events.markdown(results["events"]), "",
            "## The event log's cost", "", bench_event_cost.markdown(results["event_cost"], noop_cpu)]
    out += ["", "## Ceilings", "", bench_ceilings.markdown_table(c), "", "## Targets", "",
            "| target | wanted | measured | met |", "|---|---|---|---|"]
    wanted = {"pay_qps_share_of_noop": ">= 60% of no-op unary peak",
              "pay_p99_ms_at_half_peak": "< 10 ms",
              "legs_3x100ms_p50_ms": "< 130 ms",
              "batch_share_of_ceiling": ">= 50% of min(echo, group commit)",
              "batch_cpu_us_per_item": f"<= {bench_batch_cpu.TARGET_US_PER_ITEM:g} µs server CPU "
                                       "per item, 500/message, 100k and 1M items (worst)",
              "rss_largest_over_smallest": "<= 1.5x (largest vs smallest batch)",
              "event_log_pay_cpu_ratio": "<= 1.15x server CPU per Pay, with vs without events",
              "pay_cpu_ratio": f"<= {bench_pay_cpu.CPU_RATIO_TARGET}x no-op server CPU per call, "
                               "by calls in flight (median of rounds back to back)",
              "pay_p99_ms_at_half_peak_node": f"<= {bench_pay_cpu.P99_MS_TARGET:.0f} ms, Node open "
                                              "loop at half of Pay's peak (median of rounds)"}
    for key, text in wanted.items():
        out.append(f"| {key} | {text} | {f[key]} | {'yes' if verdict['met'][key] else 'NO'} |")
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [("no-op unary", results["ceilings"]["unary"]),
              ("Pay, channel in process", results["pay_direct"]["levels"]),
              ("Pay, channel over loopback gRPC", results["pay_grpc"]["levels"])]
    for label, levels in series:
        left.plot([lv["concurrency"] for lv in levels], [lv["qps"] for lv in levels],
                  marker="o", label=label)
    left.set_xscale("log", base=2)
    left.set_xlabel("calls in flight")
    left.set_ylabel("calls per second")
    left.set_title("Unary throughput vs concurrency")
    left.legend()
    for per_message, label in ((CHUNK_TRANSACTIONS, "chunked"), (1, "one item per message")):
        rows = sorted((b for b in results["batches"] if (b["per_message"] > 1) == (per_message > 1)),
                      key=lambda b: b["items"])
        right.plot([b["items"] for b in rows], [b["server_rss_peak_mib"] for b in rows],
                   marker="o", label=label)
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("items in the batch")
    right.set_ylabel("server peak RSS (MiB)")
    right.set_title("SubmitBatch memory vs batch size")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: proves the bench runs, measures nothing")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--batch-sizes", default="10000,100000,1000000")
    parser.add_argument("--group-size", type=int, default=500)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--legs-payments", type=int, default=50)
    parser.add_argument("--legs-latency-ms", type=float, default=100.0)
    parser.add_argument("--events-concurrency", type=int, default=32)
    parser.add_argument("--event-cost-rounds", type=int, default=5)
    parser.add_argument("--event-cost-batch-items", type=int, default=20_000)
    parser.add_argument("--pay-rounds", type=int, default=bench_pay_cpu.ROUNDS,
                        help="rounds of the no-op and Pay back to back (issue 17 points 1-2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.concurrency, args.batch_sizes = 0.3, "1,4", "300,600"
        args.group_size, args.legs_payments, args.legs_latency_ms = 100, 3, 10.0
        args.events_concurrency, args.event_cost_rounds, args.event_cost_batch_items = 4, 1, 300
        args.pay_rounds = 1
    # The 3-leg run hosts paygrid in this process: its per-payment log lines
    # would bury the report.
    configure_logging("WARNING")
    started = datetime.datetime.now(datetime.timezone.utc)
    results = asyncio.run(measure(args))
    verdict = evaluate(results)
    meta = {"started": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "quick": args.quick,
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "duration_s": args.duration_s,
            "argv": sys.argv[1:]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / started.strftime("%Y-%m-%dT%H-%M-%SZ")
    report = markdown(results, verdict, meta)
    stem.with_suffix(".md").write_text(report)
    stem.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "results": results, "verdict": verdict, "targets": TARGETS}, indent=2))
    plot(results, stem.with_suffix(".png"))
    print(report)
    print(f"written: {stem}.md, .json, .png", file=sys.stderr)


if __name__ == "__main__":
    main()
