"""Forms groups from items as they arrive.

Items gather per grouping key until a group is full, then it is sealed and
handed out. Open groups are bounded too: past MAX_OPEN_GROUPS keys, the
fullest open group is sealed early, so memory stays flat whatever the mix.
"""

from __future__ import annotations

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchGroup, BatchItem, GroupingPolicy


def group_key(policy: GroupingPolicy, item: BatchItem) -> str:
    if policy is GroupingPolicy.CHANNEL:
        return item.channel
    if policy is GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE:
        return f"{item.channel}/{item.amount.currency}/{item.payee}"
    return f"{item.channel}/{item.amount.currency}"


class Grouper:
    def __init__(self, policy: GroupingPolicy, max_group_size: int, next_group_no: int) -> None:
        assert 1 <= max_group_size <= limits.BATCH_MAX_GROUP_SIZE
        self._policy = policy
        self._max_size = max_group_size
        self._next_no = next_group_no
        self._open: dict[str, list[BatchItem]] = {}

    def add(self, item: BatchItem) -> list[BatchGroup]:
        """Groups sealed by adding `item` (usually none)."""
        key = group_key(self._policy, item)
        sealed = []
        if key not in self._open and len(self._open) >= limits.BATCH_MAX_OPEN_GROUPS:
            fullest = max(self._open, key=lambda k: len(self._open[k]))
            sealed.append(self._seal(fullest))
        self._open.setdefault(key, []).append(item)
        if len(self._open[key]) >= self._max_size:
            sealed.append(self._seal(key))
        return sealed

    def seal_all(self) -> list[BatchGroup]:
        return [self._seal(key) for key in list(self._open)]

    def _seal(self, key: str) -> BatchGroup:
        group = BatchGroup(self._next_no, key, self._open.pop(key))
        self._next_no += 1
        return group
