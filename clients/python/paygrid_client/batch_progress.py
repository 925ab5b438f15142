"""A one-line progress bar on stderr for a batch submission: items done of
the file's total, rate, and counts by status."""

from __future__ import annotations

import sys
import time
from typing import Iterable, TextIO

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.batch_files import ITEM_STATUS_NAMES

BAR_CHARS = 30
# Redrawing for every group would cost more than the groups on a fast server.
MIN_REDRAW_INTERVAL_S = 0.2


class Progress:
    def __init__(self, total_items: int, stream: TextIO = sys.stderr) -> None:
        self.total_items = max(total_items, 1)
        self.done_items = 0
        self.by_status: dict[str, int] = {}
        self._stream = stream
        self._started_s = time.monotonic()
        self._drawn_s = 0.0

    def add(self, results: Iterable[batch_pb.BatchItemResult]) -> None:
        for result in results:
            self.done_items += 1
            name = ITEM_STATUS_NAMES[result.status]
            self.by_status[name] = self.by_status.get(name, 0) + 1
        self.show()

    def show(self, final: bool = False) -> None:
        now_s = time.monotonic()
        if not final and now_s - self._drawn_s < MIN_REDRAW_INTERVAL_S:
            return
        self._drawn_s = now_s
        share = min(self.done_items / self.total_items, 1.0)
        bar = "#" * int(share * BAR_CHARS)
        rate = self.done_items / max(now_s - self._started_s, 1e-6)
        counts = " ".join(f"{k.lower()}={v}" for k, v in sorted(self.by_status.items()))
        self._stream.write(f"\r[{bar:<{BAR_CHARS}}] {self.done_items}/{self.total_items} "
                           f"{rate:,.0f} items/s {counts}")
        if final:
            self._stream.write("\n")
        self._stream.flush()
