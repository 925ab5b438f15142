"""A fake paygrid.v1.EventService that drops the first watch after two
events (UNAVAILABLE), recording every request: the clients' resume logic,
shown without waiting for a real server to restart."""

from __future__ import annotations

import grpc

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc


class DroppingEventService(ev_grpc.EventServiceServicer):
    """First call: events 1 and 2, then UNAVAILABLE; later calls: from the cursor asked."""

    def __init__(self) -> None:
        self.requests: list[ev.WatchEventsRequest] = []

    async def WatchEvents(self, request, context):
        self.requests.append(request)
        after = request.after_cursor
        for seq in range(after + 1, after + 3):
            yield ev.WatchEventsResponse(cursor=seq, event=ev.Event(
                seq=seq, aggregate_id=f"pay_{seq}", type="io.paygrid.payment.created.v1"))
        if len(self.requests) == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


async def start_dropping_event_service() -> tuple[DroppingEventService, grpc.aio.Server, int]:
    events = DroppingEventService()
    server = grpc.aio.server()
    ev_grpc.add_EventServiceServicer_to_server(events, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return events, server, port
