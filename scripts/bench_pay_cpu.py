"""Issue 17, points 1-2: Pay's server CPU and latency against the no-op server's.

1. Server CPU per Pay over the no-op server's CPU per call, at the same
   concurrency (from the closed-loop levels bench.py has measured already),
   with the floor's ratio beside it: ../shared/ceilings/pay_floor.py, a bare
   durable one-leg Pay in plain Python, run here when that file is there.
   Those levels are minutes apart, and a shared machine's speed drifts by a
   quarter in minutes, so the ratio judged is measured again in rounds of
   the two servers back to back (no-op then Pay, then Pay then no-op): the
   median of the rounds' ratios.
2. Pay p99 with the Node open-loop generator (scripts/open_loop_load.js,
   niced, so it takes the CPU the server leaves) at half of Pay's own peak,
   and the no-op server's p99 at the same offered rate, same generator: as
   many rounds back to back, each server's median p99 judged and shown.

Usage (after scripts/setup), on its own: measures the closed-loop levels too.
  .venv/bin/python scripts/bench_pay_cpu.py [--duration-s 5] [--concurrency 32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import grpc

import bench_ceilings
import bench_pay_load
from bench_load import CALL_TIMEOUT_S, in_turn, percentile
from bench_server import AUTH_METADATA, paygrid_server
from node_load import node_load_unavailable, node_unary_load

ROOT = Path(__file__).resolve().parent.parent
# ../shared/ceilings beside the checkout, or beside the folder of worktrees.
FLOOR_SCRIPTS = [folder / "shared" / "ceilings" / "pay_floor.py"
                 for folder in (ROOT.parent, ROOT.parent.parent)]
# pay_floor.py's figure when it is not there to run (../shared/ceilings/README.md, 2026-12-02).
FLOOR_RATIO_RECORDED = 1.93
CPU_RATIO_TARGET = 2.5
P99_MS_TARGET = 10.0
ISSUE_LEVELS = (32, 128)
ROUNDS = 3  # of the no-op and Pay back to back, for the CPU ratio and the p99 judged
LOAD_NICENESS = 10
# scripts/open_loop_load.js's gRPC on Node's own http2: about 60% of
# grpc-js's CPU per call, and its p99 at a no-op server about two thirds
# (docs/performance.md, session 12).
LOAD_TRANSPORT = "http2"
WARM_UP_S = 1.0  # the open loop's first second: connections, caches; not counted


def floor_figure(script_name: str, args: list[str], figure: str, recorded: float,
                 recorded_source: str, measure: bool) -> tuple[float, str]:
    """A floor script's figure (the number after `figure` in what it
    prints), measured here when ../shared/ceilings holds the script, else
    the recorded one; and where the figure comes from."""
    script = next((path.with_name(script_name) for path in FLOOR_SCRIPTS
                   if path.with_name(script_name).is_file()), None)
    if script is None or not measure:
        return recorded, recorded_source
    run = subprocess.run([sys.executable, str(script), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    found = re.search(rf"{figure} ([\d.]+)", run.stdout)
    if run.returncode != 0 or found is None:
        return recorded, f"recorded; {script_name} failed: exit {run.returncode}"
    return float(found.group(1)), "measured"


def floor_ratio(duration_s: float, concurrency: int, measure: bool) -> tuple[float, str]:
    """The floor's CPU ratio at this concurrency, and where it comes from."""
    return floor_figure("pay_floor.py", [str(duration_s), str(concurrency)], "floor_ratio",
                        FLOOR_RATIO_RECORDED, "recorded, conc 32", measure)


def cpu_rows(noop_levels: list[dict], pay_levels: list[dict], duration_s: float,
             measure_floor: bool) -> list[dict]:
    noop = {level["concurrency"]: level for level in noop_levels}
    pay = {level["concurrency"]: level for level in pay_levels}
    both = sorted(set(noop) & set(pay))
    chosen = [n for n in both if n in ISSUE_LEVELS] or both  # --quick has neither 32 nor 128
    rows = []
    for n in chosen:
        noop_us, pay_us = noop[n]["server_cpu_us_per_call"], pay[n]["server_cpu_us_per_call"]
        floor, source = floor_ratio(duration_s, n, measure_floor)
        rows.append({"concurrency": n, "noop_cpu_us_per_call": noop_us,
                     "pay_cpu_us_per_call": pay_us, "ratio": round(pay_us / noop_us, 2),
                     "floor_ratio": floor, "floor_source": source})
    return rows


async def _open_loop(target: str, method: str, make_request, rate_per_s: float,
                     duration_s: float, metadata) -> dict:
    calls, not_sent, generator_cpu_s = await node_unary_load(
        target, method, make_request, int(rate_per_s * (WARM_UP_S + duration_s) * 1.05) + 100,
        metadata, CALL_TIMEOUT_S, phases=[(rate_per_s, WARM_UP_S), (rate_per_s, duration_s)],
        niceness=LOAD_NICENESS, transport=LOAD_TRANSPORT)
    counted = [call for call in calls if call[0] >= WARM_UP_S]
    ok_ms = [latency_ms for _, code, latency_ms in counted if code is grpc.StatusCode.OK]
    return {"offered_per_s": round(rate_per_s, 1), "calls": len(counted),
            "failed": len(counted) - len(ok_ms), "not_sent": not_sent,
            "achieved_qps": round(len(ok_ms) / duration_s, 1),
            "p50_ms": round(statistics.median(ok_ms), 3) if ok_ms else None,
            "p99_ms": round(percentile(ok_ms, 0.99), 3) if ok_ms else None,
            "generator_cpu_us_per_call": round(generator_cpu_s * 1e6 / max(len(calls), 1))}


async def _pay_open_loop(rate: float, duration_s: float) -> dict:
    async with paygrid_server(in_process_channel_latency_ms=0,
                              channel_called_directly=True) as server:
        return await _open_loop(server.target, bench_pay_load.PAY_METHOD,
                                bench_pay_load.pay_request_maker(uuid.uuid4().hex[:8]), rate,
                                duration_s, AUTH_METADATA)


async def _noop_open_loop(rate: float, duration_s: float) -> dict:
    request, response = bench_ceilings.pay_payloads()
    noop_server = bench_ceilings.NoopServer(response)
    try:
        return await _open_loop(f"127.0.0.1:{noop_server.port}", bench_ceilings.UNARY_METHOD,
                                lambda _: request, rate, duration_s, ())
    finally:
        noop_server.stop()


def median_p99_run(runs: list[dict]) -> dict:
    """The run whose p99 is the median of the runs' (of an even number, the
    higher of the two middle ones): a run as measured, p50 and all."""
    ordered = sorted(runs, key=lambda run: (run["p99_ms"] is None, run["p99_ms"] or 0.0))
    return ordered[len(ordered) // 2]


async def latency_at_half_peak(pay_peak_qps: float, duration_s: float,
                               rounds: int = 1) -> dict | None:
    """Pay and the no-op server at half of Pay's peak, Node open loop, in
    `rounds` rounds back to back (Pay then no-op, then no-op then Pay); each
    server's run with the median p99 is the one shown and judged. None (with
    the reason printed) when Node cannot run here."""
    unavailable = node_load_unavailable()
    if unavailable:
        print(f"issue 17 latency rows skipped: {unavailable}", file=sys.stderr)
        return None
    rate = pay_peak_qps / 2
    runs: dict[str, list[dict]] = {"pay": [], "noop": []}
    for round_no in range(max(rounds, 1)):
        for name in in_turn(round_no, "pay", "noop"):
            runs[name].append(await (_pay_open_loop if name == "pay" else _noop_open_loop)(
                rate, duration_s))
    return {"pay": median_p99_run(runs["pay"]), "noop": median_p99_run(runs["noop"]),
            "p99_ms_by_round": {name: [run["p99_ms"] for run in found]
                                for name, found in runs.items()},
            "load_niceness": LOAD_NICENESS, "load_transport": LOAD_TRANSPORT}


async def _noop_levels(levels: list[int], duration_s: float) -> list[dict]:
    """The no-op server's closed-loop levels, its CPU per call in each."""
    request, response = bench_ceilings.pay_payloads()
    server = bench_ceilings.NoopServer(response)
    try:
        return [await bench_ceilings.measure_unary_cpu(
            server.pid, f"127.0.0.1:{server.port}", request, n, duration_s) for n in levels]
    finally:
        server.stop()


async def _pay_levels(levels: list[int], duration_s: float) -> list[dict]:
    """Pay's closed-loop levels (channel called in process), its CPU per call in each."""
    pay = await bench_pay_load.run(duration_s, levels, channel_called_directly=True,
                                   half_peak_rate=False)
    return pay["levels"]


async def paired_rounds(levels: list[int], duration_s: float, rounds: int) -> list[dict]:
    """Per level: each round's no-op and Pay CPU per call, measured back to
    back (in turn: no-op then Pay, then Pay then no-op), their ratios and
    the median ratio."""
    measured: dict[int, list[tuple[int, int]]] = {n: [] for n in levels}
    for round_no in range(rounds):
        by_server = {}
        for name in in_turn(round_no, "noop", "pay"):
            measured_levels = await (_noop_levels if name == "noop" else _pay_levels)(
                levels, duration_s)
            by_server[name] = {level["concurrency"]: level["server_cpu_us_per_call"]
                               for level in measured_levels}
        for n in levels:
            measured[n].append((by_server["noop"][n], by_server["pay"][n]))
    return [paired_row(n, pairs) for n, pairs in measured.items()]


def paired_row(concurrency: int, pairs: list[tuple[int, int]]) -> dict:
    """pairs: (no-op, Pay) CPU µs per call, one pair a round."""
    ratios = [round(pay / noop, 2) for noop, pay in pairs]
    return {"concurrency": concurrency, "noop_cpu_us_per_call": [noop for noop, _ in pairs],
            "pay_cpu_us_per_call": [pay for _, pay in pairs], "ratios": ratios,
            "ratio": statistics.median(ratios)}


async def run(duration_s: float, noop_levels: list[dict], pay_levels: list[dict],
              measure_floor: bool = True, rounds: int = 0) -> dict:
    """measure_floor=False: the floor's recorded ratio (bench --quick);
    rounds: paired_rounds' rounds (0: none, the single run's ratio is judged),
    and latency_at_half_peak's (at least one)."""
    pay_peak = max(level["qps"] for level in pay_levels)
    cpu = cpu_rows(noop_levels, pay_levels, duration_s, measure_floor)
    paired = (await paired_rounds([row["concurrency"] for row in cpu], duration_s, rounds)
              if rounds else [])
    return {"cpu": cpu, "paired": paired,
            "latency": await latency_at_half_peak(pay_peak, duration_s, rounds)}


def evaluate(result: dict) -> dict:
    latency = result["latency"]
    p99 = latency["pay"]["p99_ms"] if latency else None
    judged = result.get("paired") or result["cpu"]
    return {"figures": {"pay_cpu_ratio": {row["concurrency"]: row["ratio"] for row in judged},
                        "pay_p99_ms_at_half_peak_node": p99},
            "met": {"pay_cpu_ratio": all(row["ratio"] <= CPU_RATIO_TARGET for row in judged),
                    "pay_p99_ms_at_half_peak_node": p99 is not None and p99 <= P99_MS_TARGET}}


def markdown(result: dict) -> str:
    out = [f"Server CPU per call, same run, same Python load generator (target: Pay <= "
           f"{CPU_RATIO_TARGET}x no-op):", "",
           "| in flight | no-op µs/call | Pay µs/call | ratio | ceiling | floor's ratio |",
           "|---:|---:|---:|---:|---:|---:|"]
    for row in result["cpu"]:
        out.append(f"| {row['concurrency']} | {row['noop_cpu_us_per_call']} "
                   f"| {row['pay_cpu_us_per_call']} | {row['ratio']:.2f}x "
                   f"| {CPU_RATIO_TARGET}x | {row['floor_ratio']:.2f}x ({row['floor_source']}) |")
    if result.get("paired"):
        rounds = len(result["paired"][0]["ratios"])
        out += ["", f"The same, {rounds} rounds of the two servers back to back (no-op then "
                    "Pay, then Pay then no-op): the median ratio is the one judged.", "",
                "| in flight | no-op µs/call by round | Pay µs/call by round | ratios | median |",
                "|---:|---|---|---|---:|"]
        for row in result["paired"]:
            out.append(f"| {row['concurrency']} | {', '.join(map(str, row['noop_cpu_us_per_call']))} "
                       f"| {', '.join(map(str, row['pay_cpu_us_per_call']))} "
                       f"| {', '.join(f'{r:.2f}' for r in row['ratios'])} | {row['ratio']:.2f}x |")
    latency = result["latency"]
    if latency is None:
        return "\n".join(out + ["", "Open-loop latency: not measured (no Node load generator)."])
    out += ["", f"Open loop, Node generator ({latency['load_transport']}, nice "
                f"{latency['load_niceness']}), at half of Pay's peak (target: Pay p99 <= "
                f"{P99_MS_TARGET:.0f} ms):", "",
            "| server | offered/s | achieved/s | failed | not sent | p50 ms | p99 ms "
            "| generator µs/call |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("pay", "noop"):
        run_ = latency[name]
        out.append(f"| {'Pay' if name == 'pay' else 'no-op'} | {run_['offered_per_s']:,.0f} "
                   f"| {run_['achieved_qps']:,.0f} | {run_['failed']} | {run_['not_sent']} "
                   f"| {run_['p50_ms']} | {run_['p99_ms']} | {run_['generator_cpu_us_per_call']} |")
    by_round = latency.get("p99_ms_by_round", {})
    if len(by_round.get("pay", [])) > 1:
        out += ["", f"p99 ms by round, back to back: Pay {', '.join(map(str, by_round['pay']))}; "
                    f"no-op {', '.join(map(str, by_round['noop']))}. Each row above is the "
                    "server's run with the median p99."]
    return "\n".join(out)


async def _measure_alone(duration_s: float, levels: list[int], rounds: int) -> dict:
    noop_levels = await _noop_levels(levels, duration_s)
    pay_levels = await _pay_levels(levels, duration_s)
    return await run(duration_s, noop_levels, pay_levels, rounds=rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", default="32,128")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    result = asyncio.run(_measure_alone(args.duration_s,
                                        [int(n) for n in args.concurrency.split(",")],
                                        args.rounds))
    print(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
