"""The async client reports the status a server refused a batch stream with,
even when the refusal arrives while the client is still writing the stream:
grpc.aio then replaces that status with its own INTERNAL "Internal error
from Core" (grpc/grpc#36066), which the client must not pass on
(paygrid_client/stream_status.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client import NO_RETRIES, AsyncPaygridClient, PaygridError
from tests.support.batch_client import batch_stub, header, open_stream, tx

# The stream is longer than flow control lets out while the server reads
# nothing past the header, so writes are still going out when the refusal
# comes. Without the client's fix 24 to 40 of the 40 calls ended INTERNAL
# (5 runs, both engines failing in each; with 10 messages of 500, PostgreSQL
# passed in 3 of 7 runs); with it, 0 of 640 (8 runs).
CALLS = 40
ITEMS = 20_000  # 40 messages of 500


async def _held_open(paygrid, batch_id: str):
    """Another stream that has sent `batch_id`'s header and keeps it open."""
    holder, outgoing = open_stream(batch_stub(paygrid.channel), timeout=120)
    await outgoing.put(header(batch_id, payer="acct_payroll"))
    async with AsyncPaygridClient(f"127.0.0.1:{paygrid.app.port}") as observer:
        while True:  # until the header is stored: from then on every other stream is refused
            try:
                if (await observer.get_batch(batch_id)).status == \
                        batch_pb.BATCH_STATUS_RECEIVING:
                    return holder, outgoing
            except PaygridError as error:
                assert error.code == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.01)


async def test_a_refusal_while_the_client_still_writes_keeps_the_servers_status(
        paygrid) -> None:
    holder, outgoing = await _held_open(paygrid, "payroll-held")
    items = [tx(f"e{i}", currency="USD") for i in range(ITEMS)]
    refusals = []
    async with AsyncPaygridClient(f"127.0.0.1:{paygrid.app.port}",
                                  retry_policy=NO_RETRIES) as client:
        for _ in range(CALLS):
            with pytest.raises(PaygridError) as refused:
                async for _ in client.submit_batch("payroll-held", "acct_payroll", items):
                    pass
            refusals.append((refused.value.code, refused.value.reason,
                             refused.value.retry_delay_s is not None))
    await outgoing.put(None)
    async for _ in holder:
        pass
    seen = Counter(refusals)
    assert seen == {(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS", True): CALLS}, \
        {f"{code.name} {reason}": n for (code, reason, _), n in seen.items()}
