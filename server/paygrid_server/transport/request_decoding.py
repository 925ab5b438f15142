"""Requests are parsed inside the call, not by grpc before it.

grpc.aio parses a request before any handler or interceptor code runs, and a
message that does not parse (cut short, invalid UTF-8 in a string, a varint
over 10 bytes, a bad tag...) ends the call UNKNOWN ("Unexpected DecodeError")
with nothing else. Parsed here instead, such a request is INVALID_ARGUMENT
with a BadRequest naming the field whose bytes are bad (or "" when the
framing of the request itself is broken), counted and logged like any other
call, and after authentication, so an unauthenticated caller learns nothing
about message formats.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterator

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from paygrid_server.domain.model.errors import FieldViolation, InvalidRequest
from paygrid_server.transport.handler_wrapping import behaviour_and_maker
from paygrid_server.transport.status_errors import abort_with

_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_VARINT_BYTES = 10
# protobuf's own recursion limit.
_MAX_DEPTH = 100
# Fields looked at to find the bad one: past it the request is named as a
# whole, so a megabyte of tiny fields costs no more than this.
_MAX_FIELDS_WALKED = 20_000


class _Malformed(Exception):
    def __init__(self, path: str, description: str) -> None:
        super().__init__(description)
        self.path = path
        self.description = description


def malformed(descriptor: Descriptor, data: bytes, error: Exception) -> InvalidRequest:
    """The violation for bytes that do not parse as `descriptor`'s message."""
    try:
        _check_message(descriptor, memoryview(data), "", 0, [_MAX_FIELDS_WALKED])
    except _Malformed as found:
        return InvalidRequest([FieldViolation(found.path, found.description)])
    return InvalidRequest([FieldViolation(
        "", f"not a valid {descriptor.full_name} message: {error}")])


def _varint(data: memoryview, pos: int, path: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise _Malformed(path, "the message ends inside a varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos + i + 1
    raise _Malformed(path, f"a varint longer than {_MAX_VARINT_BYTES} bytes")


def _child(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_message(descriptor: Descriptor | None, data: memoryview, prefix: str, depth: int,
                   budget: list[int], end_group: int | None = None,
                   name_fields: bool = True) -> int:
    """Walks one message's fields (or one group's, up to its end tag) and
    raises _Malformed at the first field whose bytes cannot be read; returns
    where the message ended. `budget`: fields still to look at, shared."""
    if depth > _MAX_DEPTH:
        raise _Malformed(prefix, f"nested deeper than {_MAX_DEPTH} levels")
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise _Malformed("", f"not a valid message (more than {_MAX_FIELDS_WALKED} fields "
                                 "looked at for the bad one)")
        tag, pos = _varint(data, pos, prefix)
        number, wire = tag >> 3, tag & 7
        if number == 0 or wire > _FIXED32:
            raise _Malformed(prefix, f"invalid field tag {tag}")
        field = descriptor.fields_by_number.get(number) if descriptor else None
        path = prefix
        if field is not None and name_fields:
            path = _child(prefix, field.name)
            if _is_repeated(field) and not _is_map(field):
                path = f"{path}[{seen.get(number, 0)}]"
                seen[number] = seen.get(number, 0) + 1
        if wire == _VARINT:
            _, pos = _varint(data, pos, path)
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > len(data):
                raise _Malformed(path, "the message ends inside a fixed-size field")
        elif wire == _LENGTH_DELIMITED:
            size, pos = _varint(data, pos, path)
            if size > len(data) - pos:
                raise _Malformed(path, f"a length of {size} bytes where {len(data) - pos} follow")
            _check_payload(field, data[pos:pos + size], path, depth, budget)
            pos += size
        elif wire == _START_GROUP:
            pos += _check_message(None, data[pos:], path, depth + 1, budget, end_group=number)
        else:  # _END_GROUP
            if end_group != number:
                raise _Malformed(prefix, f"an end-group tag for field {number} without its start")
            return pos
    if end_group is not None:
        raise _Malformed(prefix, f"group {end_group} is never closed")
    return pos


def _check_payload(field: FieldDescriptor | None, payload: memoryview, path: str,
                   depth: int, budget: list[int]) -> None:
    if field is None:
        return  # an unknown field: kept as bytes, never read
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        # A map entry's key and value are not fields of the request: the map is named.
        _check_message(field.message_type, payload, path, depth + 1, budget,
                       name_fields=not _is_map(field))
    elif field.type == FieldDescriptor.TYPE_STRING:
        try:
            str(payload, "utf-8")
        except UnicodeDecodeError:
            raise _Malformed(path, "not valid UTF-8") from None


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type.GetOptions().map_entry)


def parse_request(message_class: Any, data: bytes) -> Any:
    """`data` as a `message_class`, or InvalidRequest naming the bad field."""
    try:
        return message_class.FromString(data)
    except DecodeError as error:
        raise malformed(message_class.DESCRIPTOR, data, error) from None


def generated_request_class(handler: grpc.RpcMethodHandler) -> Any | None:
    """The generated message class whose FromString the handler's requests
    are parsed with; None for any other deserializer (left to grpc)."""
    message_class = getattr(handler.request_deserializer, "__self__", None)
    return message_class if hasattr(message_class, "DESCRIPTOR") else None


def decoding_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler, given raw bytes by grpc and parsing them itself."""
    message_class = generated_request_class(handler)
    if message_class is None:
        return handler  # not a generated FromString: left to grpc

    inner, make = behaviour_and_maker(handler)

    async def parsed_stream(requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for data in requests:
            try:
                yield parse_request(message_class, data)
            except InvalidRequest:
                # The handler sees InvalidRequest (a DomainError) and may
                # refuse with it; one that lets it through still ends
                # INVALID_ARGUMENT, not UNKNOWN.
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                context.set_details("a request message does not parse")
                raise

    async def request_for(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if handler.request_streaming:
            return parsed_stream(request, context)
        try:
            return parse_request(message_class, request)
        except InvalidRequest as error:
            await abort_with(context, error)

    # As in handler_wrapping: a streaming handler may also be a coroutine
    # that sends with context.write (grpc_health's Watch is one).
    if handler.response_streaming and inspect.isasyncgenfunction(inner):
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async for response in inner(await request_for(request, context), context):
                yield response
    else:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await inner(await request_for(request, context), context)

    return make(behaviour, request_deserializer=None,
                response_serializer=handler.response_serializer)
