"""Sorting a chunk of arriving batch items against what is stored, the same
for every engine: new, resent (same content: its stored result stands), or
refused (a second copy in one submission, or other content than first sent)."""

from __future__ import annotations

from typing import Any, Mapping

from paygrid_server.domain.model.batch import BatchItem, BatchItemStatus, ItemResult
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.batch_store import IngestOutcome
from paygrid_server.storage.batch_rows import item_from_row

# A reference no stored item has; one an earlier item of the same call took
# (stored or resent), so a second copy is a duplicate.
_NOT_STORED = object()
_TAKEN_NOW = object()


def sort_incoming(items: list[BatchItem], stored: Mapping[str, Any], submission: int,
                  outcome: IngestOutcome) -> tuple[list[BatchItem], list[int]]:
    """`stored`: rows by reference (ITEM_COLUMNS first, then `submission` by
    name). Fills outcome.refused and outcome.resent; returns the items to
    insert and the seqs of the resent ones."""
    seen: dict[str, Any] = dict(stored)
    fresh: list[BatchItem] = []
    resent: list[int] = []
    for item in items:
        prior = seen.get(item.reference, _NOT_STORED)
        if prior is _NOT_STORED:
            fresh.append(item)
            seen[item.reference] = _TAKEN_NOW
        elif prior is _TAKEN_NOW or prior["submission"] == submission:
            outcome.refused.append(ItemResult(
                item.reference, BatchItemStatus.REJECTED, failure=Failure(
                    FailureReason.DUPLICATE_REFERENCE,
                    f"reference {item.reference!r} appears twice in this batch")))
        elif (first := item_from_row(prior)).content() != item.content():
            outcome.refused.append(ItemResult(
                item.reference, BatchItemStatus.REJECTED, failure=Failure(
                    FailureReason.REFERENCE_CONFLICT,
                    f"reference {item.reference!r} was first sent with other content")))
        else:
            resent.append(first.seq)
            outcome.resent.append(first)
            seen[item.reference] = _TAKEN_NOW
    return fresh, resent
