"""Publishes the event log, every tenant's, to a broker: at least once, in
seq order, never past an event the broker did not confirm.

It keeps a sliding window of events out (relay_window.py: their confirms
arrive in any order) and moves its cursor over the confirmed prefix only:
with 5 and 7 confirmed and 6 returned, the cursor stops at 5. Any failure (a
nack, a return, a dropped connection) ends the session: the relay saves the
confirmed prefix, reconnects after a backoff and publishes again from the
saved cursor, so 7 goes out twice and nothing is lost. The cursor is saved
in the background, one save at a time: a crash republishes what was
confirmed since the last save. Only the leading replica relays (RelayLeadership); it
sleeps on the log's change signal when it has caught up."""

from __future__ import annotations

import asyncio
import enum
import functools
from dataclasses import dataclass

import structlog

from paygrid_server.domain.events.relay_window import CursorSaver, PublishWindow
from paygrid_server.domain.ports.event_log import EventLog
from paygrid_server.domain.ports.event_relay import (
    BrokerUnavailable,
    EventPublisher,
    PublishFailed,
    RelayLeadership,
    RelayPosition,
)
from paygrid_server.domain.ports.storage_errors import StorageUnavailable

log = structlog.get_logger("paygrid.event_relay")


class RelayState(enum.Enum):
    STOPPED = "stopped"
    WAITING_FOR_LEAD = "waiting_for_lead"  # another replica relays
    CONNECTING = "connecting"
    RELAYING = "relaying"
    BACKING_OFF = "backing_off"  # after a failure, before reconnecting


@dataclass(frozen=True, slots=True)
class RelayLimits:
    window: int = 256  # events out (published, not yet confirmed) at most
    first_backoff_s: float = 0.2  # after a failure; doubles per failure in a row
    max_backoff_s: float = 10.0
    # Caught up, it re-reads the head this often even without a wake-up
    # (a lost LISTEN connection must not freeze the lag figure).
    idle_check_s: float = 5.0


@dataclass(slots=True)
class RelayStats:
    """What metrics read at scrape time."""

    state: RelayState = RelayState.STOPPED
    cursor: int = 0  # every event up to it is confirmed
    head_seq: int = 0  # the log's last seq, as last read
    published: int = 0
    confirmed: int = 0
    failures: int = 0  # sessions ended by a failure
    leads: int = 0  # times this replica took the lead

    @property
    def lag(self) -> int:
        return max(0, self.head_seq - self.cursor)


class EventRelay:
    def __init__(self, events: EventLog, position: RelayPosition,
                 leadership: RelayLeadership, publisher: EventPublisher,
                 limits: RelayLimits = RelayLimits(), broker: str = "") -> None:
        """`broker` names the broker and its setting in log lines."""
        self._broker = broker
        self._events = events
        self._position = position
        self._leadership = leadership
        self._publisher = publisher
        self._limits = limits
        self.stats = RelayStats()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._publisher.close()
        await self._leadership.release()
        self.stats.state = RelayState.STOPPED

    async def _run(self) -> None:
        while True:
            self.stats.state = RelayState.WAITING_FOR_LEAD
            await self._leadership.acquire()
            self.stats.leads += 1
            log.info("event_relay.leading")
            session = asyncio.ensure_future(self._lead())
            lost = asyncio.ensure_future(self._leadership.lost.wait())
            try:
                await asyncio.wait({session, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                session.cancel()
                lost.cancel()
                await asyncio.gather(session, lost, return_exceptions=True)
            log.warning("event_relay.lead_lost",
                        hint="the connection holding the lead broke; waiting to lead again")
            await self._publisher.close()

    async def _lead(self) -> None:
        """Connect, relay until something fails, back off, again: forever."""
        failures_in_a_row = 0
        last_problem = ""
        while True:
            try:
                self.stats.state = RelayState.CONNECTING
                cursor = await self._position.load()
                self.stats.cursor = cursor
                self.stats.head_seq = max(await self._events.last_seq(), cursor)
                await self._publisher.connect()
                self.stats.state = RelayState.RELAYING
                log.info("event_relay.connected", broker=self._broker, cursor=cursor)
                failures_in_a_row, last_problem = 0, ""
                await self._relay_from(cursor)
            except (BrokerUnavailable, PublishFailed, StorageUnavailable) as error:
                problem = f"{type(error).__name__}: {error}"
            except Exception as error:  # noqa: BLE001 - a bug must not end the relay for good
                log.exception("event_relay.unexpected_error")
                problem = f"{type(error).__name__}: {error}"
            self.stats.failures += 1
            self.stats.state = RelayState.BACKING_OFF
            await self._publisher.close()
            delay = min(self._limits.max_backoff_s,
                        self._limits.first_backoff_s * 2 ** failures_in_a_row)
            failures_in_a_row += 1
            # One line per distinct problem, not one per retry.
            if problem != last_problem:
                log.warning("event_relay.failed", error=problem, broker=self._broker,
                            cursor=self.stats.cursor,
                            retry_in_s=delay, hint="events wait in the log; none is lost")
                last_problem = problem
            await asyncio.sleep(delay)

    async def _relay_from(self, cursor: int) -> None:
        window = PublishWindow(self._limits.window, self._publisher.publish, cursor)
        saver = CursorSaver(self._position, cursor, self._saved)
        read_through = cursor  # the last event read (and sent)
        try:
            while True:
                seen, caught_up = self._events.changes(), False
                if asked := window.room:
                    events = await self._events.list_all_events(read_through, asked)
                    self.stats.head_seq = max(await self._events.last_seq(), read_through)
                    caught_up = len(events) < asked
                    if events:
                        window.send(events)
                        self.stats.published += len(events)
                        read_through = events[-1].seq
                    elif window.empty:
                        await self._events.wait_for_change(seen, self._limits.idle_check_s)
                        continue
                confirmed_before = window.confirmed
                failure = await window.settle(functools.partial(
                    self._events.wait_for_change, seen, self._limits.idle_check_s)
                    if caught_up else None)
                self.stats.confirmed += window.confirmed - confirmed_before
                if failure is not None:
                    saver.offer(window.confirmed_through)
                    await saver.flush()
                    raise failure
                saver.offer(window.confirmed_through)
        finally:
            await window.abandon()
            await saver.cancel()

    def _saved(self, cursor: int) -> None:
        self.stats.cursor = cursor
