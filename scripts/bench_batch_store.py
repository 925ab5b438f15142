"""The SQLite batch store's own work on the writer thread, side by side with
an older commit: SqliteBatchStore's insert_items, mark_group_processing and
save_group_results for N items (500 per message, groups of 100, every item
SUCCEEDED), each timed inside the writer's work function (thread CPU: the
Python that builds and binds rows, and SQLite's statements; not the COMMIT
nor the hand-off). Trees alternated round by round, each run in its own
process; medians (and ranges) in µs per item per phase at the end.
`bench_batch_writer.py` is the SQL alone, for schema variants.
Usage (after scripts/setup):
  .venv/bin/python scripts/bench_batch_store.py [--rounds 5] [--items 50000] [--baseline main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_baseline_tree import baseline_tree, imported_from

UID = "bat_01JABCDEFGHJKMNPQRSTVWXYZ0"
PHASES = ("insert", "mark", "results")


async def measure(items: int) -> dict[str, float]:
    """One run in this process, with whichever paygrid_server it imports."""
    from paygrid_server.domain.model.batch import (Batch, BatchGroup, BatchHeader, BatchItem,
                                                   BatchItemStatus, BatchStatus, GroupingPolicy)
    from paygrid_server.domain.model.money import Money
    from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
    from paygrid_server.storage.sqlite.database import SqliteDatabase
    from paygrid_server.transport.event_messages import ProtobufSnapshots

    spent = dict.fromkeys(PHASES, 0.0)
    phase = "insert"
    with tempfile.TemporaryDirectory() as folder:
        database = await SqliteDatabase.open(Path(folder) / "paygrid.sqlite3")
        store = SqliteBatchStore(database, ProtobufSnapshots())
        write = store._write

        def timed(work):
            def run(db):
                started = time.thread_time()
                try:
                    return work(db)
                finally:
                    spent[phase] += time.thread_time() - started
            return run

        store._write = lambda work: write(timed(work))
        header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 100, 4)
        await store.insert_batch(Batch("dev", "b1", UID, header, header.fingerprint(),
                                       BatchStatus.RECEIVING, 0, 1))
        await store.start_submission(UID, header, 1)
        spent.update(dict.fromkeys(PHASES, 0.0))
        for first in range(1, items + 1, 500):
            message = [BatchItem(seq, f"ref-{seq:08d}", f"payee_{seq:08d}",
                                 Money("EUR", 100 + seq % 1000), "", None, "sim")
                       for seq in range(first, min(items, first + 499) + 1)]
            phase = "insert"
            await store.insert_items(UID, 1, message, 0)
            for start in range(0, len(message), 100):
                group = BatchGroup((first + start) // 100 + 1, "EUR",
                                   message[start:start + 100], started_at_us=5)
                for item in group.items:
                    item.status, item.group_no = BatchItemStatus.PROCESSING, group.group_no
                phase = "mark"
                await store.mark_group_processing(UID, group)
                for item in group.items:
                    item.status = BatchItemStatus.SUCCEEDED
                    item.channel_reference = f"ch_{item.seq:010d}"
                group.completed_at_us = 9
                phase = "results"
                await store.save_group_results(UID, group)
        await database.close()
    figures = {name: round(seconds * 1e6 / items, 2) for name, seconds in spent.items()}
    figures["total"] = round(sum(figures.values()), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.items))))
        return
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with baseline_tree(args.baseline) as baseline_env:
        assert "paygrid-baseline-" in str(imported_from(baseline_env))
        for round_no in range(args.rounds):
            for name in (["baseline", "this"] if round_no % 2 == 0 else ["this", "baseline"]):
                env = {**os.environ, **(baseline_env if name == "baseline" else {})}
                found = json.loads(subprocess.run(
                    [sys.executable, __file__, "--child", "--items", str(args.items)],
                    check=True, capture_output=True, text=True, env=env).stdout)
                print(json.dumps({"round": round_no, "tree": name, **found}), flush=True)
                runs[name].append(found)
    print(json.dumps({"baseline": args.baseline, "rounds": args.rounds, "items": args.items,
                      "medians": {name: {key: statistics.median(r[key] for r in found)
                                         for key in found[0]} for name, found in runs.items()},
                      "ranges": {name: {key: [min(r[key] for r in found),
                                              max(r[key] for r in found)]
                                        for key in found[0]} for name, found in runs.items()}}))


if __name__ == "__main__":
    main()
