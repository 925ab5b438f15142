"""What one charge_batch call takes and gives back, as columns: a batch
group's hundred items cost one list per field instead of an order object
and a record object each (issue 17: per-item objects were most of the
event loop's share of a batch item's CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import ChargeRecord, ChargeStatus


@dataclass(frozen=True, slots=True)
class ChargeOrders:
    """Charges to make, index i of every list being one charge; all for one
    payer (a batch's)."""

    keys: list[str]
    payer: str
    payees: list[str]
    amounts: list[Money]
    references: list[str]

    def __len__(self) -> int:
        return len(self.keys)


class ChargeRecords(Sequence[ChargeRecord]):
    """The channel's records, one per order and in order. What a capture
    leaves on a batch item (charge id, status) is read as columns; a whole
    ChargeRecord is made only for the record read (a decline, a void)."""

    __slots__ = ("charge_ids", "statuses", "_record")

    def __init__(self, charge_ids: list[str], statuses: list[ChargeStatus],
                 record: Callable[[int], ChargeRecord]) -> None:
        assert len(charge_ids) == len(statuses)
        self.charge_ids = charge_ids
        self.statuses = statuses
        self._record = record  # the whole record at an index

    def __len__(self) -> int:
        return len(self.statuses)

    def __getitem__(self, index):  # type: ignore[override] - no slices
        if not isinstance(index, int):
            raise TypeError("ChargeRecords takes an index, not a slice")
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._record(index % len(self))

    def __iter__(self) -> Iterator[ChargeRecord]:
        return map(self._record, range(len(self)))
