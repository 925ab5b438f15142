"""`paygrid events` as its own process against a real paygrid: watch with
a named consumer (acks as it prints, resumes where it stopped), from
LATEST, filters; list, ack and delete-consumer with their exit codes."""

from __future__ import annotations

import asyncio
import sys

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from tests.clients.test_cli import CLI, json_lines, paygrid_cli
from tests.conftest import pay_request
from tests.support.server_process import wait_for


async def _events(paygrid) -> list[ev.Event]:
    return list((await ev_grpc.EventServiceStub(paygrid.channel).ListEvents(
        ev.ListEventsRequest(page_size=1000))).events)


def _saved(paygrid, consumer: str) -> list[tuple]:
    return paygrid.rows("SELECT cursor FROM event_consumers WHERE name = ?", (consumer,))


async def test_watch_with_a_consumer_acks_what_it_printed_and_resumes_after_it(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    first = (await paygrid.stub.Pay(pay_request("k-cli-1"))).payment
    second = (await paygrid.stub.Pay(pay_request("k-cli-2"))).payment
    events = await _events(paygrid)
    code, out, err = await paygrid_cli(target, "events", "watch", "--consumer", "erp",
                                       "--json", "--max-events", "3")
    assert code == 0, err
    printed = json_lines(out)
    assert [(e["aggregateId"], int(e["seq"])) for e in printed] == [
        (first.payment_id, e.seq) for e in events[:3]]
    # The snapshot is decoded: a paygrid.v1.Payment.
    assert printed[2]["data"]["@type"] == "type.googleapis.com/paygrid.v1.Payment"
    assert printed[2]["data"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert _saved(paygrid, "erp") == [(events[2].seq,)]
    # Again: after the saved position, nothing printed twice (human lines).
    code, out, err = await paygrid_cli(target, "events", "watch", "--consumer", "erp",
                                       "--max-events", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [str(e.seq) for e in events[3:]]
    assert all(second.payment_id in line and "io.paygrid.payment." in line for line in lines)
    assert _saved(paygrid, "erp") == [(events[5].seq,)]


async def test_watch_latest_follows_new_commits_with_filters(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    await paygrid.stub.Pay(pay_request("k-old"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CLI), "--target", target, "events", "watch", "--latest",
        "--consumer", "tail", "--type", "io.paygrid.payment.succeeded", "--max-events", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        # Its first frame (the start position) is acked: from then on it follows.
        start = (await _events(paygrid))[-1].seq
        await wait_for(lambda: _saved(paygrid, "tail") == [(start,)], "the watch to start")
        new = (await paygrid.stub.Pay(pay_request("k-new"))).payment
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    (line,) = out.decode().splitlines()
    assert new.payment_id in line and "io.paygrid.payment.succeeded.v1" in line


async def test_list_ack_and_delete_consumer(paygrid) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    paid = (await paygrid.stub.Pay(pay_request("k-l1"))).payment
    await paygrid.stub.Pay(pay_request("k-l2"))
    events = await _events(paygrid)
    code, out, err = await paygrid_cli(target, "events", "list", "--subject", paid.payment_id,
                                       "--type", "io.paygrid.payment.leg.")
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith(f"{events[1].seq}  io.paygrid.payment.leg.succeeded.v1")
    assert f"next: --from {events[1].seq}" in err

    code, out, err = await paygrid_cli(target, "events", "ack", "billing", str(events[4].seq))
    assert (code, out.strip()) == (0, f"billing: {events[4].seq}"), err
    code, out, _ = await paygrid_cli(target, "events", "ack", "billing", str(events[1].seq))
    assert (code, out.strip()) == (0, f"billing: {events[4].seq}")  # cumulative
    code, _, err = await paygrid_cli(target, "events", "ack", "billing",
                                     str(events[-1].seq + 1))
    assert code == 2 and "past the log's end" in err
    assert (await paygrid_cli(target, "events", "delete-consumer", "billing"))[0] == 0
    code, _, err = await paygrid_cli(target, "events", "delete-consumer", "billing")
    assert code == 2 and "not found" in err
    code, _, err = await paygrid_cli(target, "events", "watch", "--from", "3", "--latest")
    assert code == 2 and "not allowed with" in err

