"""SubmitBatch side by side with an older commit: `bench_batch.py`'s run of
this tree and of `--baseline` (main by default), both servers given their
batch at the same time, for `rounds` rounds (which starts first swapped each
round), with the server's CPU per item, the event loop's, the SQLite
writer's and the other threads' (from /proc/<pid>/task, named by
thread_names.py; each run prints its every thread) and items/s; medians at
the end, and the median of each round's this/baseline ratio.

Why at the same time: this machine's speed moves by 2x from one minute to
the next (the same code's batch took 19 to 36 us an item in consecutive
runs, 2026-12-05), so runs one after the other gave a change's ratio 0.78x
to 1.23x from round to round; both trees batching together see the same
machine (the same change: 0.94x to 1.00x). Items/s is then each tree's
share of the machine, only comparable between the two.
Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch_threads.py [--rounds 4] [--items 100000] [--per-message 500] [--group-size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

import bench_batch
from bench_baseline_tree import baseline_tree, imported_from

FIGURES = {"cpu_us": lambda r: r["server_cpu_us_per_item"],
           "loop_us": lambda r: r["thread_cpu_us_per_item"].get("loop", 0.0),
           "writer_us": lambda r: r["thread_cpu_us_per_item"].get("writer", 0.0),
           # gRPC's C threads, the log flusher, metrics, executors...
           "others_us": lambda r: round(sum(
               us for name, us in r["thread_cpu_us_per_item"].items()
               if name not in ("loop", "writer")), 1),
           "items_per_s": lambda r: r["client_items_per_s"]}


async def run(rounds: int, items: int, per_message: int, group_size: int,
              baseline: str) -> dict:
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    ratios: dict[str, list[float]] = {key: [] for key in FIGURES}
    with baseline_tree(baseline) as baseline_env:
        assert "paygrid-baseline-" in str(imported_from(baseline_env))
        envs = {"baseline": baseline_env, "this": None}
        for round_no in range(rounds):
            order = ["baseline", "this"] if round_no % 2 == 0 else ["this", "baseline"]
            results = await asyncio.gather(*(
                bench_batch.run(items, per_message, group_size, 4, extra_env=envs[name])
                for name in order))
            found = {}
            for name, result in zip(order, results):
                found[name] = {key: read(result) for key, read in FIGURES.items()}
                print(json.dumps({"round": round_no, "tree": name, **found[name],
                                  "threads": result["thread_cpu_us_per_item"]}), flush=True)
                runs[name].append(found[name])
            for key in FIGURES:
                if found["baseline"][key]:
                    ratios[key].append(round(found["this"][key] / found["baseline"][key], 3))
    return {"baseline": baseline, "rounds": rounds, "items": items, "per_message": per_message,
            "group_size": group_size,
            "medians": {name: {key: statistics.median(f[key] for f in found)
                               for key in FIGURES} for name, found in runs.items()},
            "this_over_baseline": {key: {"median": statistics.median(values), "rounds": values}
                                   for key, values in ratios.items() if values}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--baseline", default="main")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.items, args.per_message, args.group_size,
                                     args.baseline))))


if __name__ == "__main__":
    main()
