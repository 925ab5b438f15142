"""SubmitBatch side by side with an older commit: `bench_batch.py`'s run of
this tree and of `--baseline` (main by default) alternated for `rounds`
rounds (the order swapped each round), with the server's CPU per item, the
event loop's, the SQLite writer's and the other threads' (from
/proc/<pid>/task, named by thread_names.py; each run prints its every
thread) and items/s; medians at the end. On a shared machine one run decides nothing:
both trees of a round get the same machine.
Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch_threads.py [--rounds 3] [--items 100000] [--per-message 500]
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


async def run(rounds: int, items: int, per_message: int, baseline: str) -> dict:
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with baseline_tree(baseline) as baseline_env:
        assert "paygrid-baseline-" in str(imported_from(baseline_env))
        for round_no in range(rounds):
            for name in (["baseline", "this"] if round_no % 2 == 0 else ["this", "baseline"]):
                result = await bench_batch.run(items, per_message, 100, 4,
                                               extra_env=baseline_env if name == "baseline"
                                               else None)
                figures = {key: read(result) for key, read in FIGURES.items()}
                print(json.dumps({"round": round_no, "tree": name, **figures,
                                  "threads": result["thread_cpu_us_per_item"]}), flush=True)
                runs[name].append(figures)
    return {"baseline": baseline, "rounds": rounds, "items": items, "per_message": per_message,
            "medians": {name: {key: statistics.median(f[key] for f in found)
                               for key in FIGURES} for name, found in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--baseline", default="main")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.items, args.per_message, args.baseline))))


if __name__ == "__main__":
    main()
