"""Forms groups from items as they arrive.

Items gather per grouping key until a group is full, then it is sealed and
handed out. Open groups are bounded too: past MAX_OPEN_GROUPS keys, the
fullest open group is sealed early, so memory stays flat whatever the mix.
"""

from __future__ import annotations

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchGroup, BatchItem, GroupingPolicy


def group_key(policy: GroupingPolicy, item: BatchItem) -> str:
    return group_keys(policy, [item])[0]


def group_keys(policy: GroupingPolicy, items: list[BatchItem]) -> list[str]:
    """Each item's grouping key: one comprehension for a message's items,
    not a call each."""
    if policy is GroupingPolicy.CHANNEL:
        return [item.channel for item in items]
    if policy is GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE:
        return [f"{item.channel}/{item.amount.currency}/{item.payee}" for item in items]
    return [f"{item.channel}/{item.amount.currency}" for item in items]


_NONE_SEALED: list[BatchGroup] = []  # shared, never changed: most adds seal nothing


class Grouper:
    def __init__(self, policy: GroupingPolicy, max_group_size: int, next_group_no: int) -> None:
        assert 1 <= max_group_size <= limits.BATCH_MAX_GROUP_SIZE
        self._policy = policy
        self._max_size = max_group_size
        self._next_no = next_group_no
        self._open: dict[str, list[BatchItem]] = {}

    def keys(self, items: list[BatchItem]) -> list[str]:
        return group_keys(self._policy, items)

    def add(self, item: BatchItem, key: str | None = None) -> list[BatchGroup]:
        """Groups sealed by adding `item` (usually none); `key`: its
        grouping key, if taken already with keys()."""
        if key is None:
            key = group_key(self._policy, item)
        members = self._open.get(key)
        if members is None:
            sealed = []
            if len(self._open) >= limits.BATCH_MAX_OPEN_GROUPS:
                fullest = max(self._open, key=lambda k: len(self._open[k]))
                sealed.append(self._seal(fullest))
            members = self._open[key] = []
        else:
            sealed = _NONE_SEALED
        members.append(item)
        if len(members) >= self._max_size:
            sealed = [*sealed, self._seal(key)]
        return sealed

    def seal_all(self) -> list[BatchGroup]:
        return [self._seal(key) for key in list(self._open)]

    def _seal(self, key: str) -> BatchGroup:
        group = BatchGroup(self._next_no, key, self._open.pop(key))
        self._next_no += 1
        return group
