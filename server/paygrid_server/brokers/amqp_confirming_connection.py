"""An AMQP 0-9-1 connection that does one thing: publish with publisher
confirms on one channel. It is the relay's own, in place of aiormq's
general client, because what the relay pays per event is what a client
does per message (docs/performance.md, "the RabbitMQ relay's own
publishing"): here a publish is three frames appended to a buffer that is
written once per event-loop turn (one `send` for every publish of the
turn, not one each), and a confirm is one dict lookup (an ack with
`multiple` settles every tag up to it in one pass).

What it speaks, and nothing more: the handshake (PLAIN, the broker's tune
capped by ours, heartbeats both ways), channel 1 in confirm mode, a durable
topic exchange declared, mandatory publishes, acks and nacks (`multiple`
included), returns (a returned message's confirm fails, matched by
message_id), the broker closing the channel or the connection, and a close
of our own. Frames are marshalled and parsed by pamqp (aiormq's own
codec). Any failure fails every confirm still out: the relay republishes
from its cursor, so nothing more is needed for a lost confirm.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque

from pamqp import body as amqp_body, commands, constants, frame as amqp_frame, header, heartbeat

from paygrid_server.brokers.amqp_address import AmqpAddress

PROTOCOL_HEADER = header.ProtocolHeader().marshal()
CHANNEL = 1
# The most we accept per frame; the broker's own maximum, if lower, wins.
FRAME_MAX_BYTES = 131_072
TICK_S = 1.0  # how often heartbeats and confirm deadlines are looked at
# Replies kept that came before anyone waited for them (the broker's
# Connection.Start can beat open()'s first wait); more is not a broker.
MAX_REPLIES_AHEAD = 4

_FRAME_HEADER = struct.Struct(">BHI")
_ACK_TAG = struct.Struct(">QB")
_METHOD_ID = struct.Struct(">HH")
_BASIC_ACK = (60, 80)
_BASIC_NACK = (60, 120)
_FRAME_END = constants.FRAME_END_CHAR


class AmqpError(Exception):
    """The connection could not be opened, or failed: the reason, as the
    broker or the socket gave it."""


class Returned(AmqpError):
    """The broker returned a mandatory message: no queue is bound for it."""


class ConfirmingAmqpConnection(asyncio.Protocol):
    """Open with `open()`, publish with `publish()` (a future per message,
    its confirm), end with `close()`. Not reusable once lost."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._out: list[bytes] = []  # frames written at the end of this turn
        self._replies: deque[tuple[type, asyncio.Future]] = deque()  # handshake and close
        self._arrived: deque[object] = deque()  # replies that came before their wait
        # tag: (its confirm, message_id, when sent); tags below _lowest_tag are settled.
        self._confirms: dict[int, tuple[asyncio.Future, str, float]] = {}
        self._last_tag = 0
        self._lowest_tag = 1
        self._returned: str | None = None  # reason of the Return whose header comes next
        self._returned_ids: dict[str, str] = {}  # message_id: why it was returned
        self._failure: AmqpError | None = None
        self._frame_max = FRAME_MAX_BYTES
        self._heartbeat_s = 0
        self._confirm_timeout_s = 30.0
        self._last_sent = self._last_received = time.monotonic()
        self._ticker: asyncio.TimerHandle | None = None
        self._publish_frames: dict[tuple[str, str], bytes] = {}

    # -- opening and closing ------------------------------------------------

    async def open(self, address: AmqpAddress, exchange: str, connection_name: str,
                   timeout_s: float, confirm_timeout_s: float) -> None:
        self._confirm_timeout_s = confirm_timeout_s
        async with asyncio.timeout(timeout_s):
            await self._loop.create_connection(
                lambda: self, address.host, address.port, ssl=address.tls,
                server_hostname=address.host if address.tls else None)
            await self._reply(commands.Connection.Start)
            self._send_now(commands.Connection.StartOk(
                client_properties={
                    "product": "paygrid", "connection_name": connection_name,
                    "capabilities": {"publisher_confirms": True, "basic.nack": True,
                                     "authentication_failure_close": True}},
                mechanism="PLAIN", response=f"\0{address.user}\0{address.password}"), 0)
            tune = await self._reply(commands.Connection.Tune)
            self._frame_max = min(tune.frame_max or FRAME_MAX_BYTES, FRAME_MAX_BYTES)
            asked = address.heartbeat_s
            self._heartbeat_s = min(asked, tune.heartbeat) if asked and tune.heartbeat \
                else max(asked, tune.heartbeat)
            self._send_now(commands.Connection.TuneOk(
                channel_max=1, frame_max=self._frame_max, heartbeat=self._heartbeat_s), 0)
            self._send_now(commands.Connection.Open(virtual_host=address.vhost), 0)
            await self._reply(commands.Connection.OpenOk)
            self._send_now(commands.Channel.Open(), CHANNEL)
            await self._reply(commands.Channel.OpenOk)
            self._send_now(commands.Confirm.Select(), CHANNEL)
            await self._reply(commands.Confirm.SelectOk)
            self._send_now(commands.Exchange.Declare(
                exchange=exchange, exchange_type="topic", durable=True), CHANNEL)
            await self._reply(commands.Exchange.DeclareOk)
        self._ticker = self._loop.call_later(TICK_S, self._tick)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Connection.Close, its CloseOk awaited (at most `timeout_s`), and
        the socket closed; every confirm still out fails."""
        if self._transport is not None and self._failure is None:
            self._send_now(commands.Connection.Close(reply_code=200, reply_text="closing",
                                                     class_id=0, method_id=0), 0)
            try:
                async with asyncio.timeout(timeout_s):
                    await self._reply(commands.Connection.CloseOk)
            except (AmqpError, TimeoutError):
                pass
        self.abort("connection closed")

    def abort(self, reason: str) -> None:
        """The socket closed at once, without the closing handshake (an open
        that failed); every confirm still out fails."""
        self._fail(AmqpError(reason))

    # -- publishing ---------------------------------------------------------

    def publish(self, exchange: str, routing_key: str, content_header: bytes, body: bytes,
                message_id: str) -> asyncio.Future:
        """The message, mandatory, sent at the end of this loop turn;
        `content_header`: the header frame's payload (class, weight, body
        size, properties), whose message_id is `message_id` (a return is
        matched by it). The future ends with its confirm (an AmqpError if
        nacked, returned or lost)."""
        confirmed = self._loop.create_future()
        if self._failure is not None:
            confirmed.set_exception(self._failure)
            return confirmed
        method = self._publish_frames.get((exchange, routing_key))
        if method is None:
            method = self._publish_frames[(exchange, routing_key)] = amqp_frame.marshal(
                commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                       mandatory=True), CHANNEL)
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(method)
        out.append(_FRAME_HEADER.pack(constants.FRAME_HEADER, CHANNEL, len(content_header)))
        out.append(content_header)
        out.append(_FRAME_END)
        chunk = self._frame_max - 8
        for start in range(0, len(body), chunk):
            part = body[start:start + chunk]
            out.append(_FRAME_HEADER.pack(constants.FRAME_BODY, CHANNEL, len(part)))
            out.append(part)
            out.append(_FRAME_END)
        self._last_tag += 1
        self._confirms[self._last_tag] = (confirmed, message_id, time.monotonic())
        return confirmed

    def _flush(self) -> None:
        if self._out and self._transport is not None and self._failure is None:
            self._transport.write(b"".join(self._out))
            self._last_sent = time.monotonic()
        self._out.clear()

    def _send_now(self, method: object, channel: int) -> None:
        if self._transport is None:
            return  # lost meanwhile: the failure has been told to every waiter
        self._transport.write(amqp_frame.marshal(method, channel))
        self._last_sent = time.monotonic()

    # -- what the broker sends ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._transport.write(PROTOCOL_HEADER)

    def connection_lost(self, error: Exception | None) -> None:
        self._transport = None
        self._fail(AmqpError(f"connection lost: {error}" if error else "connection lost"))

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def data_received(self, data: bytes) -> None:
        try:
            self._take(data)
        except Exception as error:  # noqa: BLE001 - a frame pamqp cannot read: the connection is over
            self._fail(AmqpError(f"unreadable frame from the broker: {type(error).__name__}: {error}"))

    def _take(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        received = self._received
        received += data
        start, end = 0, len(received)
        while end - start >= 7:
            kind, channel, size = _FRAME_HEADER.unpack_from(received, start)
            stop = start + 8 + size
            if stop > end:
                break
            if received[stop - 1] != constants.FRAME_END:
                self._fail(AmqpError("malformed frame from the broker"))
                return
            method = _METHOD_ID.unpack_from(received, start + 7) \
                if kind == constants.FRAME_METHOD else None
            if method == _BASIC_ACK or method == _BASIC_NACK:
                tag, bits = _ACK_TAG.unpack_from(received, start + 11)
                self._settle(tag, bool(bits & 1), method == _BASIC_ACK)
            elif kind != constants.FRAME_HEARTBEAT:
                self._on_frame(amqp_frame.unmarshal(bytes(received[start:stop]))[2])
            start = stop
        del received[:start]

    def _on_frame(self, value: object) -> None:
        if isinstance(value, commands.Basic.Return):
            self._returned = f"{value.reply_code} {value.reply_text} ({value.routing_key!r})"
        elif isinstance(value, header.ContentHeader):
            if self._returned is not None:
                self._returned_ids[value.properties.message_id] = self._returned
                self._returned = None
        elif isinstance(value, commands.Connection.Close):
            self._send_now(commands.Connection.CloseOk(), 0)
            self._fail(AmqpError(f"connection closed by the broker: "
                                  f"{value.reply_code} {value.reply_text}"))
        elif isinstance(value, commands.Channel.Close):
            self._send_now(commands.Channel.CloseOk(), CHANNEL)
            self._fail(AmqpError(f"channel closed by the broker: "
                                  f"{value.reply_code} {value.reply_text}"))
        elif isinstance(value, (amqp_body.ContentBody, commands.Connection.Blocked,
                                commands.Connection.Unblocked)):
            pass  # a returned message's body; a broker's alarm (confirms are then late)
        elif self._replies:
            kind, waiter = self._replies.popleft()
            if not waiter.done():
                waiter.set_result(value)
        elif len(self._arrived) < MAX_REPLIES_AHEAD:
            self._arrived.append(value)

    def _settle(self, tag: int, multiple: bool, acked: bool) -> None:
        # Tags are consecutive from 1, so `multiple` is a range from the
        # lowest unsettled tag, not a scan of every confirm out.
        confirms = self._confirms
        for each in range(self._lowest_tag if multiple else tag, tag + 1):
            found = confirms.pop(each, None)
            if found is None:
                continue
            future, message_id, _ = found
            why_returned = self._returned_ids.pop(message_id, None) if self._returned_ids else None
            if future.done():
                continue
            if why_returned is not None:
                future.set_exception(Returned(f"returned by the broker: {why_returned}"))
            elif acked:
                future.set_result(None)
            else:
                future.set_exception(AmqpError("nacked by the broker"))
        while self._lowest_tag <= self._last_tag and self._lowest_tag not in confirms:
            self._lowest_tag += 1

    # -- failure ------------------------------------------------------------

    async def _reply(self, kind: type) -> object:
        """The broker's next reply, which must be a `kind` (the handshake's
        and the close's steps, one at a time)."""
        if self._failure is not None:
            raise self._failure
        if self._arrived:
            value = self._arrived.popleft()
        else:
            waiter = self._loop.create_future()
            self._replies.append((kind, waiter))
            value = await waiter
        if not isinstance(value, kind):
            raise AmqpError(f"the broker sent {getattr(value, 'name', value)!r} "
                            f"where {kind.__name__} was due")
        return value

    def _tick(self) -> None:
        now = time.monotonic()
        if self._heartbeat_s and now - self._last_received > 2 * self._heartbeat_s:
            self._fail(AmqpError(f"no heartbeat from the broker for {2 * self._heartbeat_s} s"))
            return
        oldest = self._confirms.get(self._lowest_tag)
        if oldest is not None and now - oldest[2] > self._confirm_timeout_s:
            self._fail(AmqpError(f"no confirm within {self._confirm_timeout_s:g} s"))
            return
        if self._heartbeat_s and now - self._last_sent > self._heartbeat_s / 2:
            self._transport.write(heartbeat.Heartbeat().marshal())
            self._last_sent = now
        self._ticker = self._loop.call_later(TICK_S, self._tick)

    def _fail(self, error: AmqpError) -> None:
        if self._failure is None:
            self._failure = error
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for future, _, _ in self._confirms.values():
            if not future.done():
                future.set_exception(self._failure)
        self._confirms.clear()
        while self._replies:
            _, waiter = self._replies.popleft()
            if not waiter.done():
                waiter.set_exception(self._failure)
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()
