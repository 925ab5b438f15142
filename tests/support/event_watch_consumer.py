"""A WatchEvents consumer that outlives server kills, for the chaos runs.

Each event is appended to the delivery file (on disk, fsync) before the
cursor moves past it; a dropped stream is resumed with the last cursor,
retried with backoff while no server answers (on the next replica, when
there are several). The cursor it would keep
across its own restarts is saved only every `save_cursor_every` events, as
a real consumer commits its offset now and then: `restart()` stands for the
consumer process dying, so it resumes from the saved cursor and gets again
what it had after it (the duplicates the checker counts).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

import grpc

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from tests.support.api_key_metadata import keyed_channel
from tests.support.crash_rig import RECONNECT_OPTIONS
from tests.support.event_delivery_check import Delivery, DeliveryLog, Payload

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0


class WatchConsumer:
    def __init__(self, name: str, targets: Sequence[str], deliveries: Path,
                 save_cursor_every: int = 25) -> None:
        self.name = name
        self.targets = list(targets)  # replicas; one at a time, the next when it fails
        self.attached = 0  # index of the replica it watches (or will, once it answers)
        self.log = DeliveryLog(deliveries)
        self.save_cursor_every = save_cursor_every
        self.cursor = 0  # the live cursor: after the last event written to the file
        self.saved_cursor = 0  # what a restarted consumer resumes from
        self.sessions = 0
        self.restarts = 0
        self.delivered = 0
        self._unsaved = 0
        self._call = None
        self._dropped = False  # its stream was cancelled on purpose (attach, restart)
        self._restarting = False

    async def run(self) -> None:
        """Until cancelled."""
        channels = [keyed_channel(target, options=RECONNECT_OPTIONS) for target in self.targets]
        backoff = BACKOFF_FIRST_S
        try:
            while True:
                if self._restarting:
                    self.cursor, self._unsaved = self.saved_cursor, 0
                self._dropped = self._restarting = False
                stub = ev_grpc.EventServiceStub(channels[self.attached])
                self.sessions += 1
                try:
                    self._call = stub.WatchEvents(ev.WatchEventsRequest(after_cursor=self.cursor))
                    async for response in self._call:
                        if response.HasField("event"):
                            await self._deliver(response.event)
                        self.cursor = response.cursor
                        backoff = BACKOFF_FIRST_S
                except grpc.aio.AioRpcError as error:
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.CANCELLED,
                                            grpc.StatusCode.RESOURCE_EXHAUSTED):
                        raise
                except asyncio.CancelledError:
                    if not self._dropped or asyncio.current_task().cancelling():
                        raise  # the consumer is stopped
                if not self._dropped:
                    # The replica is down or restarting: the next one, after a while.
                    self.attached = (self.attached + 1) % len(self.targets)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            self.log.close()
            for channel in channels:
                await channel.close()

    async def _deliver(self, event: ev.Event) -> None:
        # fsync off the event loop: the channel simulators share this loop,
        # and a slow disk must not make them miss paygrid's deadlines.
        await asyncio.to_thread(self.log.append, Delivery(
            consumer=self.name, session=self.sessions, seq=event.seq, event_id=event.event_id,
            type=event.type, aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id, version=event.aggregate_version,
            payload=Payload.of_any(event.data)))
        self.delivered += 1
        self._unsaved += 1
        if self._unsaved >= self.save_cursor_every:
            self.saved_cursor, self._unsaved = event.seq, 0

    def attach(self, replica: int) -> None:
        """Watch through this replica from now on: the stream is dropped
        and resumed there with the live cursor."""
        if replica != self.attached:
            self.attached = replica
            self._drop()

    def restart(self) -> None:
        """The consumer dies and comes back: its stream is dropped, and it
        resumes from the cursor it last saved (never ahead of the file)."""
        self.restarts += 1
        self._restarting = True
        self._drop()

    def _drop(self) -> None:
        self._dropped = True
        if self._call is not None:
            self._call.cancel()
