"""Issue 17, point 3: SubmitBatch's server CPU per item (bench_batch.py reads
it from /proc) beside its target and the floor's: ../shared/ceilings/batch_floor.py,
the least a batch item costs in plain Python (parse, validate, store before
the charge and after, build the bulk request and the result; one core, no
gRPC), run here when that file is there.

Usage (after scripts/setup), the floor alone:
  .venv/bin/python scripts/bench_batch_cpu.py [--items 100000]
"""

from __future__ import annotations

import argparse

from bench_pay_cpu import floor_figure

# batch_floor.py's figure when it is not there to run (../shared/ceilings/README.md, 2026-12-02).
FLOOR_US_RECORDED = 6.2
TARGET_US_PER_ITEM = 25.0
FLOOR_ITEMS = 100_000
# Rows the target is held against: the 100k and 1M items, 500 per message.
TARGET_MIN_ITEMS = 100_000


def floor_us_per_item(measure: bool, items: int = FLOOR_ITEMS) -> dict:
    """The floor's CPU per item, and where it comes from."""
    us, source = floor_figure("batch_floor.py", [str(items)], "cpu_us_per_item",
                              FLOOR_US_RECORDED, "recorded", measure)
    return {"us_per_item": us, "source": source}


def worst_us_per_item(batches: list[dict]) -> float:
    """The highest server CPU per item of the chunked rows the target covers
    (all chunked rows when none is that big, as in bench --quick)."""
    chunked = [b for b in batches if b["per_message"] > 1]
    covered = [b for b in chunked if b["items"] >= TARGET_MIN_ITEMS] or chunked
    return max(b["server_cpu_us_per_item"] for b in covered)


def column_title(floor: dict) -> str:
    return (f"server CPU µs/item (target {TARGET_US_PER_ITEM:g}; floor "
            f"{floor['us_per_item']:g}, {floor['source']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=FLOOR_ITEMS)
    args = parser.parse_args()
    floor = floor_us_per_item(True, args.items)
    print(f"floor {floor['us_per_item']} us/item ({floor['source']}); "
          f"target {TARGET_US_PER_ITEM} us/item")


if __name__ == "__main__":
    main()
