"""The Node.js client's watchEvents (clients/node/event_watch.js): against a
real paygrid (replay, follow, filters, AckEvents), and against a fake
EventService that drops the stream, to show it resumes after the last
cursor without repeating or skipping an event."""

from __future__ import annotations

import json

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from tests.clients.test_node_client import _node, node_client, pytestmark  # noqa: F401
from tests.conftest import pay_request
from tests.support.dropping_event_service import start_dropping_event_service

WATCH_SCRIPT = """
const {{ createClients, unaryCall }} = require('./paygrid_client');
const {{ watchEvents }} = require('./event_watch');
(async () => {{
  const clients = createClients({{ target: '{target}' }});
  const seen = [];
  for await (const frame of watchEvents(clients.events, {request})) {{
    seen.push([frame.cursor, frame.event.aggregate_id, frame.event.type]);
    if (seen.length === {count}) break;
  }}
  const ack = {ack} ? await unaryCall(clients.events, 'AckEvents',
    {{ consumer: 'node', up_to_cursor: seen[seen.length - 1][0] }}, {{ deadlineMs: 5000 }}) : null;
  process.stdout.write(JSON.stringify({{ seen, ack }}));
  clients.close();
}})().catch((error) => {{ console.error(error); process.exit(1); }});
"""


async def _watch(target: str, request: dict, count: int, ack: bool = False) -> dict:
    code, out, err = await _node("-e", WATCH_SCRIPT.format(
        target=target, request=json.dumps(request), count=count, ack=str(ack).lower()))
    assert code == 0, err
    return json.loads(out)


async def test_watch_events_replays_filters_and_acks(paygrid, node_client) -> None:
    target = f"127.0.0.1:{paygrid.app.port}"
    first = (await paygrid.stub.Pay(pay_request("k-node-1"))).payment
    second = (await paygrid.stub.Pay(pay_request("k-node-2"))).payment
    events = list((await ev_grpc.EventServiceStub(paygrid.channel).ListEvents(
        ev.ListEventsRequest())).events)
    everything = await _watch(target, {}, 6, ack=True)
    assert everything["seen"] == [[str(e.seq), e.aggregate_id, e.type] for e in events]
    assert everything["ack"] == {"cursor": str(events[-1].seq)}
    assert {e.aggregate_id for e in events} == {first.payment_id, second.payment_id}
    # Resumed from a cursor, filtered by subject and type.
    filtered = await _watch(target, {"after_cursor": str(events[0].seq),
                                     "subject": first.payment_id,
                                     "type_prefix": "io.paygrid.payment.succeeded"}, 1)
    assert filtered["seen"] == [[str(events[2].seq), first.payment_id,
                                 "io.paygrid.payment.succeeded.v1"]]
    # The consumer acked above: its watch starts after everything.
    await paygrid.stub.Pay(pay_request("k-node-3"))
    resumed = await _watch(target, {"consumer": "node"}, 1)
    assert int(resumed["seen"][0][0]) > events[-1].seq


async def test_watch_events_resumes_after_the_last_cursor_when_the_stream_drops(
        node_client) -> None:
    events, server, port = await start_dropping_event_service()
    try:
        watched = await _watch(f"127.0.0.1:{port}", {
            "consumer": "erp", "start": "START_POSITION_LATEST",
            "type_prefix": "io.paygrid.payment."}, 4)
    finally:
        await server.stop(None)
    assert [s[0] for s in watched["seen"][:4]] == ["1", "2", "3", "4"]
    first, again = events.requests
    assert (first.consumer, first.start) == ("erp", ev.START_POSITION_LATEST)
    # Again after event 2, as a plain cursor (the consumer's saved position
    # may be older), with the same filter.
    assert again == ev.WatchEventsRequest(after_cursor=2, type_prefix="io.paygrid.payment.")
