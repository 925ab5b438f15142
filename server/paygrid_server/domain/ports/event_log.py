"""What the domain and the stores need to read and write the event log."""

from __future__ import annotations

from typing import Protocol

from paygrid_server.domain.model.batch import Batch, BatchCounts, BatchGroup, BatchItem
from paygrid_server.domain.model.event import Event
from paygrid_server.domain.model.payment import Payment
from paygrid_server.domain.model.refund import Refund


class SnapshotEncoder(Protocol):
    """Serializes the snapshot an event carries. The stores call it inside
    the transaction that writes the event; the API's message format is the
    transport's business, so app.py hands its encoder to the stores."""

    def payment(self, payment: Payment, versions: range) -> tuple[str, list[bytes]]:
        """(payload type name, the payment serialized once per version,
        each with that version): one transaction's events differ only there,
        and the stores encode inside the one writer's turn."""
        ...

    def refund(self, refund: Refund) -> tuple[str, bytes]: ...

    def batch(self, batch: Batch, counts: BatchCounts,
              group_processing_us: list[int]) -> tuple[str, bytes]:
        """The batch as GetBatch reports it, from the stored batch, its
        counts and its finished groups' processing times."""
        ...

    def group(self, group: BatchGroup) -> tuple[str, bytes]:
        """A group's results as SubmitBatch streams them (every item's)."""
        ...

    def batch_items(self, items: list[BatchItem]) -> tuple[str, list[bytes]]:
        """(payload type name, each item as ListBatchItems answers it, with
        its version): the items a transaction reports one by one, encoded
        together."""
        ...


class EventLog(Protocol):
    async def list_events(self, tenant_id: str, after_seq: int, type_prefix: str,
                          limit: int, subject: str = "") -> list[Event]:
        """The tenant's events with seq > after_seq whose type starts with
        type_prefix (and, unless empty, whose aggregate_id is subject), in
        seq order. No event with a seq at or below one returned here ever
        appears later."""
        ...

    async def pruned_through(self) -> int:
        """Retention's mark: events with seq at or below it may be deleted.
        It only grows, and it moves in the transaction that deletes, so a
        read followed by this check proves nothing after a cursor at or
        above it was missing from the read."""
        ...

    async def list_all_events(self, after_seq: int, limit: int) -> list[Event]:
        """Every tenant's events with seq > after_seq, in seq order, with the
        same promise as list_events: for the operator's relay."""
        ...

    async def get_event(self, event_id: str) -> Event | None:
        """Whoever owns it: the caller checks the tenant."""
        ...

    async def last_seq(self) -> int:
        """The highest seq given so far, any tenant (0 for none), even if
        retention deleted it since: no event given a seq later can have a
        smaller one. On PostgreSQL, events committed before the call have
        their seq first."""
        ...

    def changes(self) -> int:
        """How many times events were written so far, as this process
        heard of it. Read it before list_events, then wait_for_change with
        it: a write between the two is never missed."""
        ...

    async def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        """Until changes() differs from `seen` (True at once if it does
        already), or timeout_s passes (False). Waiting costs no CPU."""
        ...
