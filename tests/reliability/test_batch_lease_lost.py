"""A replica that finds its group lease lost (another replica claimed the
group: a long pause, a partition) stops charging that group at once: its
charge in flight is cancelled and nothing more of the group is sent, so it
cannot race the new holder at the channel. Against a real server, a real
simulator and real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs

from tests.support.batch_client import batch_stub, chunk, header, open_stream, tx
from tests.conftest import channel

pytestmark = pytest.mark.postgresql_only

# Renewed often, so the loss is found soon after it happens; the lease itself
# is far longer than the test: only the steal below ends it.
LEASES = dict(batch_lease_ms=600_000, batch_lease_renew_every_ms=50)


def _on_lease_lost(lease_lost: asyncio.Event):
    """A structlog processor that sets `lease_lost` at batch.group_lease_lost."""
    def signal_lease_lost(_logger, _method, event: dict) -> dict:
        if event.get("event") == "batch.group_lease_lost":
            lease_lost.set()
        return event
    return signal_lease_lost


def _steal_the_leased_group(paygrid) -> None:
    """Another replica's claim, as it writes it: the lease is no longer ours."""
    stolen = paygrid.rows(
        "UPDATE batch_groups SET lease_owner = 'another-replica', "
        "lease_count = lease_count + 1 WHERE status = 'LEASED' RETURNING group_no")
    assert len(stolen) == 1, stolen


async def _send_one_group(outgoing: asyncio.Queue, batch_id: str, *transactions) -> None:
    """A whole stream: the header, one group's transactions, the end."""
    await outgoing.put(header(batch_id, max_group_size=len(transactions)))
    await outgoing.put(chunk(*transactions))
    await outgoing.put(None)


async def test_a_replica_that_lost_a_groups_lease_stops_charging_it_at_once(
        start_paygrid) -> None:
    # A channel timeout longer than the test: only acting on the loss ends
    # the group's wait for its held charge.
    paygrid = await start_paygrid((channel("card", timeout_ms=60_000),), **LEASES)
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    lease_lost = asyncio.Event()
    call, outgoing = open_stream(batch_stub(paygrid.channel))
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars,
                                      _on_lease_lost(lease_lost)]) as events:
            await _send_one_group(outgoing, "batch-1", *(tx(f"r{i:02d}") for i in range(10)))
            await card.faults.held(calls=1)  # the group's ChargeBatch is at the channel
            _steal_the_leased_group(paygrid)
            # Found at the next renewal, while the charge is still held:
            # without acting on it, the worker waits for the channel.
            await asyncio.wait_for(lease_lost.wait(), 10)
        assert card.faults.charges_held == 1
        assert [e["group_no"] for e in events if e["event"] == "batch.group_lease_lost"] == [1]
        assert card.charge_batch_calls == 1 and card.charge_calls == 0
    finally:
        card.faults.release_charges()
        call.cancel()
    # The held call, once released, was the last one this replica sent.
    assert card.charge_batch_calls == 1 and card.charge_calls == 0


async def test_results_refused_by_the_fence_leave_no_group_or_item_event(start_paygrid) -> None:
    """The group's events are written in the transaction of its fenced
    results: a replica whose write is refused (another claim came between)
    writes no event either. Renewal is rare here, so the loss is found only
    by the refused write itself."""
    paygrid = await start_paygrid((channel("card", timeout_ms=60_000),),
                                  batch_lease_ms=600_000, batch_lease_renew_every_ms=300_000)
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    refused = asyncio.Event()
    call, outgoing = open_stream(batch_stub(paygrid.channel))
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars,
                                      _on_lease_lost(refused)]):
            await _send_one_group(outgoing, "fenced", *(tx(f"r{i:02d}", payee=(
                "decline_do_not_honor" if i == 3 else None)) for i in range(10)))
            await card.faults.held(calls=1)  # the group's ChargeBatch is at the channel
            _steal_the_leased_group(paygrid)
            card.faults.release_charges()  # the charges land; their results are refused
            await asyncio.wait_for(refused.wait(), 30)
        assert card.charge_batch_calls == 1
        # Nothing of the group was stored: no results, no event, no version.
        assert paygrid.rows("SELECT type, aggregate_version FROM events ORDER BY 2") == [
            ("io.paygrid.batch.created.v1", 1)]
        assert paygrid.rows("SELECT version FROM batches") == [(1,)]
        assert set(paygrid.rows("SELECT status, version FROM batch_items")) == {
            ("PROCESSING", 0)}
    finally:
        card.faults.release_charges()
        call.cancel()
