"""Sends one hostile call to paygrid and says what is wrong with the answer.

Shared by tests/api/test_hostile_input.py and scripts/fuzz_requests.py. Every
call goes as raw bytes through a generic multi-callable (requests built as
messages are serialized first), so typed and malformed requests take the
same path. What must hold for every call:

- its status is one the method may answer (never UNKNOWN or INTERNAL);
- INVALID_ARGUMENT carries an ErrorInfo (domain paygrid) and a BadRequest
  whose field violations name fields of the request ("" for the request as
  a whole: bytes whose framing is broken);
- a call that is refused leaves the database as it was (see
  `must_leave_db_unchanged` for what "refused" means for a batch stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.stream_status import LOST_STATUS_DETAILS
from paygrid_server.transport.grpc_server import MAX_MESSAGE_BYTES
from tests.support.hostile_strategies import Method

C = grpc.StatusCode
_COMMON = {C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}
# What each method may answer to anything at all. ABORTED: the same key or
# batch_id still executing; RESOURCE_EXHAUSTED: overloaded or over a size limit.
ALLOWED_CODES: dict[str, frozenset[grpc.StatusCode]] = {
    "Pay": frozenset(_COMMON | {C.FAILED_PRECONDITION, C.ABORTED}),
    "GetPayment": frozenset(_COMMON | {C.NOT_FOUND}),
    "ListPayments": frozenset(_COMMON),
    "RefundPayment": frozenset(_COMMON | {C.NOT_FOUND, C.FAILED_PRECONDITION, C.ABORTED}),
    "SubmitBatch": frozenset(_COMMON | {C.FAILED_PRECONDITION, C.ABORTED}),
    "GetBatch": frozenset(_COMMON | {C.NOT_FOUND}),
    "ListBatchItems": frozenset(_COMMON | {C.NOT_FOUND}),
}
# Statuses paygrid makes itself, which must carry its ErrorInfo.
_PAYGRID_STATUSES = {C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION}
# Why a batch item may be refused (docs/api/batches.md).
ITEM_REJECTION_REASONS = {"INVALID_ITEM", "DUPLICATE_REFERENCE", "REFERENCE_CONFLICT",
                          "BATCH_LIMIT", "CONTROL_TOTALS_MISMATCH"}
CALL_TIMEOUT_S = 30.0
# Rows a server rewrites on its own, whatever the calls (a replica's
# heartbeat): not part of what a call may change.
HEARTBEAT_TABLES = frozenset({"batch_replicas"})


@dataclass
class Outcome:
    method: Method
    code: grpc.StatusCode
    details: str = ""
    reason: str = ""  # ErrorInfo.reason
    error_domain: str = ""
    violation_fields: list[str] | None = None  # None: no BadRequest
    responses: list[bytes] = field(default_factory=list)
    # The client lost the server's status (see ServerStatuses): `code` is
    # what the server counted, its details are not known.
    code_from_server_metrics: bool = False
    oversize: bool = False  # a request message was over the server's size limit


def _outcome(method: Method, error: grpc.aio.AioRpcError | None,
             responses: list[bytes]) -> Outcome:
    if error is None:
        return Outcome(method, C.OK, responses=responses)
    outcome = Outcome(method, error.code(), error.details() or "", responses=responses)
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status
        status = None
    for packed in status.details if status else ():
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            outcome.reason, outcome.error_domain = info.reason, info.domain
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            outcome.violation_fields = [v.field for v in bad.field_violations]
    return outcome


class ServerStatuses:
    """The statuses the server counted (paygrid_grpc_server_handled_total on
    its /metrics page), for a call whose status the client lost: grpc.aio's
    client reports a write that failed because the server had already ended
    the call (it refused the stream early) as its own INTERNAL or CANCELLED
    "Internal error from Core" instead of the server's status."""

    def __init__(self, metrics_port: int) -> None:
        self.metrics_port = metrics_port

    async def counts(self, method: Method) -> Counter:
        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=10) as reply:
                return reply.read().decode()

        counts: Counter = Counter()
        for family in text_string_to_metric_families(await asyncio.to_thread(get)):
            for sample in family.samples:
                if sample.name == "paygrid_grpc_server_handled_total" and \
                        sample.labels.get("grpc_method") == method.name and \
                        sample.labels.get("grpc_service") == method.service:
                    counts[sample.labels["grpc_code"]] += int(sample.value)
        return counts

    async def recorded_since(self, method: Method, before: Counter,
                             timeout_s: float = 60) -> grpc.StatusCode:
        """The code of the one call counted since `before` (the server counts
        a call when its handler has finished, which may be after the client
        has its answer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            new = await self.counts(method) - before
            if sum(new.values()) >= 1:
                assert sum(new.values()) == 1, f"more than one call counted: {new}"
                return C[next(iter(new))]
            assert time.monotonic() < deadline, "the server never counted the call"
            await asyncio.sleep(0.02)


async def send(channel: grpc.aio.Channel, method: Method, payloads: list[bytes],
               timeout_s: float = CALL_TIMEOUT_S,
               server: ServerStatuses | None = None) -> Outcome:
    """One call with `payloads` as its request message(s), raw. For a
    stream, `server` recovers a status the client lost (ServerStatuses)."""
    before = await server.counts(method) if server and method.request_streaming else None
    outcome = await _send(channel, method, payloads, timeout_s)
    outcome.oversize = any(len(p) > MAX_MESSAGE_BYTES for p in payloads)
    if before is not None and outcome.details == LOST_STATUS_DETAILS:  # INTERNAL or CANCELLED
        outcome.code = await server.recorded_since(method, before)
        outcome.code_from_server_metrics = True
    return outcome


async def _send(channel: grpc.aio.Channel, method: Method, payloads: list[bytes],
                timeout_s: float) -> Outcome:
    responses: list[bytes] = []
    try:
        if method.request_streaming:
            await _send_stream(channel.stream_stream(method.path)(timeout=timeout_s),
                               payloads, responses)
        elif method.response_streaming:
            call = channel.unary_stream(method.path)(payloads[0], timeout=timeout_s)
            async for response in call:
                responses.append(response)
        else:
            responses.append(await channel.unary_unary(method.path)(payloads[0],
                                                                    timeout=timeout_s))
    except grpc.aio.AioRpcError as error:
        return _outcome(method, error, responses)
    return _outcome(method, None, responses)


async def _send_stream(call, payloads: list[bytes], responses: list[bytes]) -> None:
    """Writes with call.write, not a request iterator: when the server ends
    the call before every message is written (it refused the stream), the
    write fails and the status is the server's; grpc.aio's iterator consumer
    reports that failed write as its own INTERNAL "Internal error from Core"."""

    async def read() -> None:
        async for response in call:
            responses.append(response)

    reading = asyncio.ensure_future(read())
    try:
        for payload in payloads:
            await call.write(payload)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call is over: its status comes from the read
    await reading


_STEP = re.compile(r"([a-z_][a-z0-9_]*)")


def field_path_exists(descriptor: Descriptor, path: str) -> bool:
    """True when `path` (e.g. legs[2].amount.currency, metadata['k'],
    header.batch_id) names a field of the message."""
    pos, current = 0, descriptor
    while True:
        match = _STEP.match(path, pos)
        if current is None or match is None:
            return False
        fd = current.fields_by_name.get(match.group(1))
        if fd is None:
            return False
        pos = match.end()
        if pos < len(path) and path[pos] == "[":
            end = _index_end(path, pos)
            if end is None or not fd.is_repeated:
                return False
            pos = end
            is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
            current = (fd.message_type.fields_by_name["value"].message_type if is_map
                       else fd.message_type)
        else:
            current = fd.message_type
        if pos == len(path):
            return True
        if path[pos] != ".":
            return False
        pos += 1


def _index_end(path: str, pos: int) -> int | None:
    """Where `[0]` or `['a key']` (a Python repr) that starts at pos ends."""
    if m := re.compile(r"\[\d+\]").match(path, pos):
        return m.end()
    if pos + 1 >= len(path) or path[pos + 1] not in "'\"":
        return None
    quote, i = path[pos + 1], pos + 2
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] == quote:
            return i + 2 if path[i + 1:i + 2] == "]" else None
        i += 1
    return None


def status_problems(outcome: Outcome) -> list[str]:
    """What is wrong with the status of one call; [] when nothing."""
    method, problems = outcome.method, []
    allowed = ALLOWED_CODES[method.name]
    if outcome.oversize and method.request_streaming:
        # grpc core ends a stream that carries a message over the limit: the
        # client gets RESOURCE_EXHAUSTED, or loses it (see ServerStatuses)
        # and the server saw its call cancelled.
        allowed = allowed | {C.CANCELLED}
    if outcome.code not in allowed:
        problems.append(f"{method.name} answered {outcome.code.name}: {outcome.details[:300]}")
    if outcome.code_from_server_metrics:
        return problems  # its details never reached the client
    if outcome.code in _PAYGRID_STATUSES and outcome.error_domain != "paygrid":
        problems.append(f"{outcome.code.name} without a paygrid ErrorInfo: {outcome.details[:200]}")
    if outcome.code == C.INVALID_ARGUMENT:
        fields = outcome.violation_fields
        if not fields:
            problems.append(f"INVALID_ARGUMENT without field violations: {outcome.details[:200]}")
        for name in fields or ():
            if name and not field_path_exists(method.request.DESCRIPTOR, name):
                problems.append(f"violation names no field of {method.request.__name__}: {name!r}")
    if method.name == "SubmitBatch":
        for raw in outcome.responses:
            response = batch_pb.SubmitBatchResponse.FromString(raw)
            if response.WhichOneof("kind") == "rejected":
                for item in response.rejected.items:
                    if item.failure.reason not in ITEM_REJECTION_REASONS:
                        problems.append(f"batch item refused for {item.failure.reason!r}")
    return problems


def _decoded(cls: type[Message], raw: bytes) -> Message | None:
    try:
        return cls.FromString(raw)
    except DecodeError:
        return None


def must_leave_db_unchanged(outcome: Outcome, payloads: list[bytes]) -> bool:
    """A unary call that failed changed nothing. A batch stream changed
    nothing when it was refused at its first message (no header, or a
    header refused: invalid, batch_id reused or busy); one refused later
    keeps the items it took, as documented, so it may have changed the DB."""
    if outcome.code == C.OK:
        return False
    if outcome.method.name != "SubmitBatch":
        return True
    messages = [_decoded(batch_pb.SubmitBatchRequest, raw) for raw in payloads]
    first = messages[0]
    if first is None or not first.HasField("header"):
        return True
    if outcome.reason in ("BATCH_ID_REUSED", "REQUEST_IN_PROGRESS"):
        return True
    if outcome.code_from_server_metrics:
        return False  # refused, but whether at the header is not known
    later_header = any(m is None or m.HasField("header") for m in messages[1:])
    return (outcome.code == C.INVALID_ARGUMENT and not later_header
            and all(f.startswith("header.") for f in outcome.violation_fields or ()))


class Database:
    """The server's SQLite file, read through connections of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        # Holds a read transaction across a call: in WAL mode it keeps seeing
        # the database as it was before the call, at no cost until read.
        self._before = sqlite3.connect(path, isolation_level=None)
        self._before_version: int | None = None

    def close(self) -> None:
        self.release_before()
        self._db.close()
        self._before.close()

    def mark_before(self) -> None:
        """Remembers the database as it is now, for changed_since_before()."""
        self.release_before()
        self._before.execute("BEGIN")
        self._before.execute("SELECT count(*) FROM sqlite_master").fetchone()  # starts the read
        self._before_version = self.data_version()

    def changed_since_before(self) -> bool:
        """Whether any table but HEARTBEAT_TABLES differs from mark_before()'s
        state: free when nothing was committed since (PRAGMA data_version),
        the contents compared otherwise (a heartbeat commits too)."""
        try:
            if self.data_version() == self._before_version:
                return False
            return _digest(self._before) != self.digest()
        finally:
            self.release_before()

    def release_before(self) -> None:
        """Ends mark_before()'s read transaction (idempotent)."""
        if self._before_version is not None:
            self._before.execute("COMMIT")
            self._before_version = None

    def data_version(self) -> int:
        """Changes whenever another connection commits (PRAGMA data_version)."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def digest(self) -> str:
        """SHA-256 of every row of every table but HEARTBEAT_TABLES."""
        self._db.execute("BEGIN")
        try:
            return _digest(self._db)
        finally:
            self._db.execute("COMMIT")

    def busy(self) -> list[str]:
        """Work still going on after its call ended (a batch's groups, a
        payment, a refund): what it is, [] when none."""
        return [f"{kind} {ident} {status}" for kind, ident, status in self._db.execute(
            "SELECT 'batch', batch_id, status FROM batches"
            " WHERE status IN ('RECEIVING', 'PROCESSING')"
            " UNION ALL SELECT 'payment', payment_id, status FROM payments"
            " WHERE status = 'PROCESSING'"
            " UNION ALL SELECT 'refund', refund_id, status FROM refunds WHERE status = 'PENDING'")]

    async def wait_until_quiet(self, timeout_s: float = 60) -> None:
        """Waits until nothing runs in the background, and no commit came for
        a moment, so the next call's before and after can be compared."""
        deadline = time.monotonic() + timeout_s
        version = self.data_version()
        while True:
            await asyncio.sleep(0.02)
            now = self.data_version()
            if now == version and not self.busy():
                return
            version = now
            if time.monotonic() > deadline:
                raise AssertionError(f"still running {timeout_s:.0f} s after its call ended: "
                                     f"{self.busy()[:5]}")


def _digest(db: sqlite3.Connection) -> str:
    """Every table rendered by SQLite itself (quote() of every column, in
    rowid order), in the connection's current read transaction."""
    sha = hashlib.sha256()
    for (table,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
        if table in HEARTBEAT_TABLES:
            continue
        columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
        row = " || ',' || ".join(f'quote("{c}")' for c in columns)
        sha.update(table.encode())
        sha.update((db.execute(f'SELECT group_concat(r, char(10)) FROM '
                               f'(SELECT {row} AS r FROM "{table}" ORDER BY rowid)'
                               ).fetchone()[0] or "").encode())
    return sha.hexdigest()


async def serving(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING
