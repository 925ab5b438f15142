"""paygrid.v1.EventService: thin translation between gRPC and the domain."""

from __future__ import annotations

import grpc

from paygrid.v1 import event_service_pb2 as pb
from paygrid.v1 import event_service_pb2_grpc as pb_grpc
from paygrid_server.domain.events.event_consumers import EventConsumers
from paygrid_server.domain.events.event_queries import EventQueries, WatchStart
from paygrid_server.domain.model.event import StartPosition
from paygrid_server.transport.api_key_authentication import caller_tenant
from paygrid_server.transport.event_messages import event_pb
from paygrid_server.transport.status_errors import maps_domain_errors

_START_POSITIONS = {
    pb.START_POSITION_UNSPECIFIED: StartPosition.AFTER_CURSOR,
    pb.START_POSITION_EARLIEST: StartPosition.EARLIEST,
    pb.START_POSITION_LATEST: StartPosition.LATEST,
}


class EventServicer(pb_grpc.EventServiceServicer):
    def __init__(self, events: EventQueries, consumers: EventConsumers) -> None:
        self._events = events
        self._consumers = consumers

    @maps_domain_errors
    async def ListEvents(self, request: pb.ListEventsRequest, context: grpc.aio.ServicerContext):
        page = await self._events.list(caller_tenant(), request.after_cursor, request.page_size,
                                       request.type_prefix, request.subject)
        return pb.ListEventsResponse(events=[event_pb(e) for e in page.events],
                                     next_cursor=page.next_cursor)

    @maps_domain_errors
    async def GetEvent(self, request: pb.GetEventRequest, context: grpc.aio.ServicerContext):
        return pb.GetEventResponse(event=event_pb(await self._events.get(caller_tenant(),
                                                                         request.event_id)))

    @maps_domain_errors
    async def WatchEvents(self, request: pb.WatchEventsRequest,
                          context: grpc.aio.ServicerContext) -> None:
        # Sent with context.write until the caller cancels (or the server
        # stops): a request error is raised before any frame.
        start = WatchStart(request.after_cursor,
                           _START_POSITIONS.get(request.start, str(request.start)),
                           request.consumer)
        frames = self._events.watch(caller_tenant(), request.after_cursor, request.type_prefix,
                                    subject=request.subject, start=start)
        async for frame in frames:
            await context.write(pb.WatchEventsResponse(
                event=event_pb(frame.event) if frame.event is not None else None,
                cursor=frame.cursor))

    @maps_domain_errors
    async def AckEvents(self, request: pb.AckEventsRequest, context: grpc.aio.ServicerContext):
        return pb.AckEventsResponse(cursor=await self._consumers.ack(
            caller_tenant(), request.consumer, request.up_to_cursor))

    @maps_domain_errors
    async def DeleteEventConsumer(self, request: pb.DeleteEventConsumerRequest,
                                  context: grpc.aio.ServicerContext):
        await self._consumers.delete(caller_tenant(), request.consumer)
        return pb.DeleteEventConsumerResponse()
