"""Which events a batch group's results write, and their rows, the same for
every engine; each store only says how its dialect reads and writes them,
inside the transaction that stores the results (under the group's fence on
PostgreSQL: a replica whose write is refused writes no event either).

A group's completion reports it: one batch.item.failed or batch.item.unknown
per FAILED or UNKNOWN item (in seq order), then one batch.group.completed
carrying every item's result. Successes get no event of their own: a
million-item payroll writes one event per group, plus one per item that
needs a look. A later save that changes items of a group (a resubmission
settling UNKNOWN items, or items a crash left mid-charge) reports that group
again: an event per changed item now FAILED or UNKNOWN, then the group as
stored. A save that changes nothing writes nothing.

These are events of the batch aggregate: they share one version sequence
with the batch's status events (batch.created ... batch.completed), so a
consumer applying version = last + 1 per batch sees them all in order.
An item's version is its own event's, else its group's event's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import BatchGroup, BatchItem, BatchItemStatus
from paygrid_server.domain.model.event import BATCH_AGGREGATE, EventType
from paygrid_server.domain.model.payment import FailureReason
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_rows import every_item, item_status
from paygrid_server.storage.event_rows import event_row

_ITEM_EVENTS = {
    BatchItemStatus.FAILED: EventType.BATCH_ITEM_FAILED,
    BatchItemStatus.UNKNOWN: EventType.BATCH_ITEM_UNKNOWN,
}
# The statuses a group's charge leaves: an item saved into one of these is
# reported; one put back to RECEIVED (fenced, charged again in a new group)
# is reported with that group.
_REPORTED = {BatchItemStatus.SUCCEEDED, *_ITEM_EVENTS}


@dataclass(slots=True)
class GroupReport:
    group: BatchGroup  # as stored after the change: every item of the group
    told_alone: list[BatchItem]  # those with an event of their own, in seq order

    @property
    def event_count(self) -> int:
        return len(self.told_alone) + 1


def _told_alone(item: BatchItem) -> bool:
    """FAILED or UNKNOWN after a charge. Items a stopped batch never charged
    (FAILED with BATCH_STOPPED: STOP_ON_FIRST_FAILURE) are told only in
    their group's event: a million-item payroll stopped by its first
    failure must not write a million events."""
    if item.status not in _ITEM_EVENTS:
        return False
    return item.failure is None or item.failure.reason is not FailureReason.BATCH_STOPPED


def completed(group: BatchGroup) -> GroupReport:
    """The group just completed: every item that needs a look is told. A
    group all SUCCEEDED (the many) is seen so by every_item, not by
    _told_alone per item."""
    if every_item(item_status, BatchItemStatus.SUCCEEDED, group.items):
        return GroupReport(group, [])
    return GroupReport(group, [i for i in group.items if _told_alone(i)])


@dataclass(frozen=True, slots=True)
class ItemChanges:
    """What a save outside a group's completion changed: the seqs of the
    items saved into a reported status they did not have, and their groups."""
    seqs: set[int]
    group_nos: list[int]

    @classmethod
    def of(cls, items: Iterable[BatchItem], status_before: Mapping[int, str]) -> ItemChanges:
        seqs = {i.seq: i.group_no for i in items
                if i.status in _REPORTED and status_before.get(i.seq) != i.status.value}
        return cls(set(seqs), sorted({group_no for group_no in seqs.values() if group_no}))

    def reports(self, groups: list[BatchGroup]) -> list[GroupReport]:
        """`groups` (these, as stored after the save) reported again: only
        their changed FAILED or UNKNOWN items are told one by one."""
        return [GroupReport(group, [i for i in group.items
                                    if i.seq in self.seqs and _told_alone(i)])
                for group in groups]


class GroupEvents:
    """The events of `reports`, for one transaction. The groups' payloads
    have no version in them, so they are encoded here, before the versions
    are taken (PostgreSQL holds the batch row's lock from then to commit)."""

    def __init__(self, reports: list[GroupReport], encoder: SnapshotEncoder) -> None:
        self._reports = reports
        self._encoder = encoder
        self._payloads = [encoder.group(report.group) for report in reports]
        for report, payload in zip(reports, self._payloads):
            report.group.stored_snapshot = payload
        self.count = sum(report.event_count for report in reports)

    @property
    def items(self) -> list[BatchItem]:
        """Every reported item: each one's version is set by rows()."""
        return [item for report in self._reports for item in report.group.items]

    def rows(self, tenant_id: str, batch_id: str, version_before: int) -> list[tuple]:
        """The events' rows, versions from version_before + 1; sets each
        reported item's version (its own event's, else its group's)."""
        return _rows(self._reports, self._payloads, tenant_id, batch_id, version_before,
                     self._encoder)


def _rows(reports: list[GroupReport], payloads: list[tuple[str, bytes]], tenant_id: str,
          batch_id: str, version_before: int, encoder: SnapshotEncoder) -> list[tuple]:
    version = version_before
    alone: list[BatchItem] = []
    order: list[tuple[EventType, int, tuple[str, bytes] | None]] = []
    for report, payload in zip(reports, payloads):
        told = set()
        for item in report.told_alone:
            version += 1
            item.version = version
            alone.append(item)
            told.add(item.seq)
            order.append((_ITEM_EVENTS[item.status], version, None))
        version += 1
        for item in report.group.items:
            if item.seq not in told:
                item.version = version
        order.append((EventType.BATCH_GROUP_COMPLETED, version, payload))
    item_type, item_payloads = encoder.batch_items(alone)
    next_item = iter(item_payloads)
    at_us = clock.now_us()
    return [event_row(event_type, tenant_id, batch_id, version,
                      *(payload or (item_type, next(next_item))), at_us, BATCH_AGGREGATE)
            for event_type, version, payload in order]
