"""Hostile input, the fast subset (scripts/fuzz_requests runs the long one):
property tests over every field of every paygrid.v1 request, raw malformed
protobuf bytes to every method, and messages past the size limits.

Whatever a caller sends: a proper status (never UNKNOWN or INTERNAL; field
violations naming real fields), a database left as it was by a refused call,
and a server still SERVING. Examples are derandomized, so a run is the same
on every machine; a failure prints the request that caused it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from typing import AsyncIterator

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import batch_service_pb2_grpc as batch_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model import limits
from paygrid_server.transport.grpc_server import MAX_MESSAGE_BYTES
from tests.support.batch_client import chunk, header, submit, tx
from tests.conftest import leg, pay_request
from tests.support.hostile_probe import (
    Database,
    Outcome,
    ServerStatuses,
    must_leave_db_unchanged,
    send,
    serving,
    status_problems,
)
from tests.support.hostile_strategies import (
    METHODS,
    METHODS_BY_NAME,
    Known,
    RequestStrategies,
    every_request_field,
    length_delimited,
    malformed_bytes,
    requests_for,
)

# What is tested is the edge (parsing, validation, statuses), the same on
# every storage engine; the database digest reads the SQLite file.
pytestmark = pytest.mark.sqlite_only

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
# A batch stream costs ~0.2 s (the server waits 100 ms to tell a half-close from a cancel).
FAST_STREAMS = settings(FAST, max_examples=10)


class Hostile:
    """One server, its database and the ids it knows, for all of a test's examples."""

    def __init__(self, paygrid, known: Known) -> None:
        self.paygrid = paygrid
        self.db = Database(paygrid.database)
        self.known = known
        self.strategies = RequestStrategies(known)
        self.server = ServerStatuses(paygrid.app.metrics_port)

    async def call(self, method_name: str, payloads: list[bytes]) -> Outcome:
        method = METHODS_BY_NAME[method_name]
        await self.db.wait_until_quiet()
        self.db.mark_before()
        outcome = await send(self.paygrid.channel, method, payloads, server=self.server)
        problems = status_problems(outcome)
        if outcome.code == grpc.StatusCode.OK:
            self.known.learn(method_name, payloads, outcome.responses)
        if must_leave_db_unchanged(outcome, payloads) and self.db.changed_since_before():
            problems.append(f"{outcome.code.name} ({outcome.reason}) changed the database")
        self.db.release_before()
        if not await serving(self.paygrid.channel):
            problems.append("the server no longer answers health checks SERVING")
        assert not problems, problems
        return outcome


@pytest.fixture
async def hostile(paygrid) -> AsyncIterator[Hostile]:
    """For all of a test's examples: a payment and a batch requests can name."""
    payment = (await paygrid.stub.Pay(pay_request("known-1", leg(), leg()))).payment
    reply = await submit(batch_grpc.BatchServiceStub(paygrid.channel),
                         header("known-batch"), chunk(tx("r1"), tx("r2")))
    assert reply.summary.counts.succeeded == 2
    made = Hostile(paygrid, Known(payment_ids=[payment.payment_id], batch_ids=["known-batch"]))
    yield made
    made.db.close()


UNARY = [m.name for m in METHODS if not m.request_streaming]


@pytest.mark.parametrize("method_name", UNARY)
@FAST
@given(data=st.data())
async def test_any_request_gets_a_proper_status_and_a_refusal_changes_nothing(
        hostile, method_name, data) -> None:
    method = METHODS_BY_NAME[method_name]
    messages = data.draw(requests_for(method, hostile.strategies), label="request")
    await hostile.call(method_name, [m.SerializeToString() for m in messages])


@FAST_STREAMS
@given(data=st.data())
async def test_any_batch_stream_gets_a_proper_status_and_a_refused_header_changes_nothing(
        hostile, data) -> None:
    messages = data.draw(hostile.strategies.batch_stream(), label="stream")
    await hostile.call("SubmitBatch", [m.SerializeToString() for m in messages])


@pytest.mark.parametrize("method_name", UNARY)
@FAST
@given(data=st.data())
async def test_malformed_bytes_are_invalid_argument_never_unknown(
        hostile, method_name, data) -> None:
    method = METHODS_BY_NAME[method_name]
    raw = data.draw(malformed_bytes(method.request, hostile.strategies.request(method)),
                    label="bytes")
    await hostile.call(method_name, [raw])


@FAST_STREAMS
@given(data=st.data())
async def test_malformed_bytes_in_a_batch_stream_are_refused_never_unknown(
        hostile, data) -> None:
    bad = malformed_bytes(batch_pb.SubmitBatchRequest,
                          hostile.strategies.batch_stream().map(lambda s: s[-1]))
    good_header = st.builds(lambda: header(hostile.known.fresh("raw")).SerializeToString())
    good_chunk = st.just(chunk(tx("raw-1"), tx("raw-2")).SerializeToString())
    payloads = data.draw(st.one_of(
        bad.map(lambda b: [b]),  # refused at the first message
        st.tuples(good_header, st.lists(st.one_of(bad, good_chunk), min_size=1, max_size=3))
        .map(lambda p: [p[0], *p[1]])), label="stream")
    await hostile.call("SubmitBatch", payloads)


# -- regressions: found by these tests, fixed in the server -------------------

UNPARSEABLE = [
    # invalid UTF-8 in a nested string: the field is named
    ("Pay", length_delimited(3, length_delimited(2, length_delimited(1, b"\xc3\x28"))),
     "legs[0].amount.currency"),
    ("Pay", length_delimited(3, b"") + length_delimited(3, length_delimited(1, b"\xff")),
     "legs[1].payee"),
    ("Pay", length_delimited(5, length_delimited(1, b"\xff")), "metadata"),
    # a varint of 11 bytes; a length past the end; garbage
    ("ListPayments", b"\x08" + b"\xff" * 10 + b"\x01", "page_size"),
    ("GetPayment", b"\x0a\x7fabc", "payment_id"),
    ("GetBatch", b"\xff\xff\xff", ""),
    ("RefundPayment", length_delimited(3, b"\x12\x05ab"), "legs[0].amount"),
    ("ListBatchItems", b"\x0a\x05ab", "batch_id"),
]


async def test_a_request_that_does_not_parse_is_invalid_argument_naming_the_field(
        paygrid) -> None:
    for method_name, raw, field in UNPARSEABLE:
        outcome = await send(paygrid.channel, METHODS_BY_NAME[method_name], [raw])
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (method_name, outcome.details)
        assert outcome.violation_fields == [field], method_name
        assert outcome.reason == "INVALID_REQUEST" and outcome.error_domain == "paygrid"


async def test_bytes_that_do_not_parse_are_checked_after_the_api_key_and_for_every_service(
        paygrid) -> None:
    garbage = b"\x0a\x05ab"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paygrid.app.port}") as anonymous:
        outcome = await send(anonymous, METHODS_BY_NAME["Pay"], [garbage])
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome.details
        # health and reflection (open to all) are parsed the same way
        with pytest.raises(grpc.aio.AioRpcError) as health:
            await anonymous.unary_unary("/grpc.health.v1.Health/Check")(garbage, timeout=10)
        assert health.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        reflection = anonymous.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(timeout=10)
        await reflection.write(b"\xff\xff")
        await reflection.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            async for _ in reflection:
                pass
        assert listed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_page_token_out_of_range_is_invalid_argument(paygrid) -> None:
    """Was UNKNOWN (OverflowError in the store) for a cursor past int64."""
    for cursor in ([10**30, "pay_x"], [-1, "pay_x"], [2**63, "pay_x"], [True, "pay_x"],
                   [1.5, "pay_x"]):
        token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        outcome = await send(paygrid.channel, METHODS_BY_NAME["ListPayments"], [
            pb.ListPaymentsRequest(page_token=token).SerializeToString()])
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (cursor, outcome.details)
        assert outcome.violation_fields == ["page_token"]


async def test_an_unknown_batch_item_status_is_invalid_argument(paygrid) -> None:
    """Was UNKNOWN (ValueError from the enum's Name)."""
    for status in (-1, 7, 2**31 - 1):
        outcome = await send(paygrid.channel, METHODS_BY_NAME["ListBatchItems"], [
            batch_pb.ListBatchItemsRequest(batch_id="b-1", status=status).SerializeToString()])
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (status, outcome.details)
        assert outcome.violation_fields == ["status"]


async def test_a_transaction_with_an_invalid_timestamp_is_rejected_and_the_batch_goes_on(
        paygrid) -> None:
    """Was a wedged batch: Timestamp.ToMicroseconds raised in the task that
    receives items, the stream hung until the client's deadline and the
    batch stayed RECEIVING, its batch_id ABORTED (in progress) forever."""
    batches = batch_grpc.BatchServiceStub(paygrid.channel)
    bad = [tx("ts-1"), tx("ts-2"), tx("ts-3")]
    bad[0].requested_at.seconds = 2**63 - 1
    bad[1].requested_at.nanos = -1
    reply = await submit(batches, header("b-ts"), chunk(*bad, tx("ts-ok")), timeout=20)
    assert reply.summary.status == batch_pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 2 and reply.summary.counts.rejected == 2
    assert {r.reference for r in reply.rejected} == {"ts-1", "ts-2"}
    assert all(r.failure.reason == "INVALID_ITEM" and "requested_at" in r.failure.message
               for r in reply.rejected)


async def test_a_huge_minor_units_with_control_totals_is_a_proper_status(paygrid) -> None:
    """Was INTERNAL: the control sum scaled the amount by the client's
    minor_units (any uint32) and Decimal.scaleb raised InvalidOperation."""
    first = header("b-scale")
    first.header.control_item_count = 1
    first.header.control_sum = "1"
    item = tx("scale-1", currency="USD")
    item.amount.minor_units = 2**32 - 1
    outcome = await send(paygrid.channel, METHODS_BY_NAME["SubmitBatch"],
                         [first.SerializeToString(), chunk(item).SerializeToString()],
                         timeout_s=20)
    assert status_problems(outcome) == [], outcome.details


async def test_a_bug_while_receiving_items_ends_the_stream_and_leaves_the_batch_resumable(
        paygrid, monkeypatch) -> None:
    """The guard behind the fix above: whatever fails in the receiving task,
    the stream ends (INTERNAL: a server bug) instead of waiting for the
    client's deadline, and the batch can be resubmitted."""
    from paygrid_server.transport import batch_servicer

    def broken(chunk):
        raise RuntimeError("injected bug")

    batches = batch_grpc.BatchServiceStub(paygrid.channel)
    with monkeypatch.context() as patched:
        patched.setattr(batch_servicer, "transaction_inputs", broken)
        outcome = await send(paygrid.channel, METHODS_BY_NAME["SubmitBatch"], [
            m.SerializeToString() for m in (header("b-bug"), chunk(tx("bug-1")))], timeout_s=20)
    assert outcome.code == grpc.StatusCode.INTERNAL, outcome.details
    reply = await submit(batches, header("b-bug"), chunk(tx("bug-1")), timeout=20)
    assert reply.summary.status == batch_pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 1


async def test_a_batch_message_that_does_not_parse_refuses_the_stream_not_unknown(
        paygrid) -> None:
    method = METHODS_BY_NAME["SubmitBatch"]
    first_garbage = await send(paygrid.channel, method, [b"\x0a\x05ab"])
    assert first_garbage.code == grpc.StatusCode.INVALID_ARGUMENT, first_garbage.details
    assert first_garbage.violation_fields == ["header"]
    assert paygrid.rows("SELECT count(*) FROM batches") == [(0,)]

    later_garbage = await send(paygrid.channel, method, [
        header("b-garbage").SerializeToString(), chunk(tx("g1")).SerializeToString(),
        length_delimited(2, length_delimited(1, length_delimited(2, b"\xff")))])
    assert later_garbage.code == grpc.StatusCode.INVALID_ARGUMENT, later_garbage.details
    assert later_garbage.violation_fields == ["transactions.transactions[0].payee"]
    assert await serving(paygrid.channel)


# -- size limits ----------------------------------------------------------------

async def test_a_request_over_the_message_size_limit_is_resource_exhausted(paygrid) -> None:
    request = pay_request("k-huge", metadata={"note": "x" * (MAX_MESSAGE_BYTES + 1)})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(request)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert paygrid.rows("SELECT count(*) FROM payments") == [(0,)]
    assert (await paygrid.stub.Pay(pay_request("k-after"))).payment.status == \
        pb.PAYMENT_STATUS_SUCCEEDED


async def test_a_batch_message_over_the_size_limit_ends_the_stream_resource_exhausted(
        paygrid) -> None:
    big = chunk(tx("big-1", channel="c" * MAX_MESSAGE_BYTES))
    outcome = await send(paygrid.channel, METHODS_BY_NAME["SubmitBatch"], [
        m.SerializeToString() for m in (header("b-huge"), chunk(tx("small-1")), big)])
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.details
    assert await serving(paygrid.channel)


async def test_a_batch_message_with_too_many_or_no_transactions_is_invalid_argument(
        paygrid) -> None:
    for count in (0, limits.BATCH_MAX_ITEMS_PER_MESSAGE + 1):
        message = chunk(*(tx(f"n-{i}") for i in range(count)))
        outcome = await send(paygrid.channel, METHODS_BY_NAME["SubmitBatch"], [
            m.SerializeToString() for m in (header(f"b-count-{count}"), message)])
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (count, outcome.details)
        assert outcome.violation_fields == ["transactions.transactions"]
    assert paygrid.rows("SELECT count(*) FROM batch_items") == [(0,)]


# -- the strategies themselves ----------------------------------------------------

def test_every_request_field_gets_values() -> None:
    """Every field of every request message is set (to a non-default value)
    by the strategies: a field added to a proto is fuzzed without more code."""
    strategies = RequestStrategies()
    seen: set[str] = set()

    def note(message) -> None:
        for fd, value in message.ListFields():
            seen.add(fd.full_name)
            values = value.values() if fd.message_type and fd.message_type.GetOptions(
            ).map_entry else (value if fd.is_repeated else [value])
            for item in list(values)[:3]:  # an element or three show every field
                if hasattr(item, "ListFields"):
                    note(item)

    for method in METHODS:
        # A stream has more fields, deeper: more examples to reach them all.
        @settings(FAST, max_examples=150 if method.request_streaming else 40,
                  phases=[Phase.generate])
        @given(requests_for(method, strategies))
        def draw(messages) -> None:
            for message in messages:
                note(message)

        draw()
    assert every_request_field() - seen == set()


def test_the_database_probe_sees_a_change_and_ignores_a_heartbeat(tmp_path) -> None:
    path = tmp_path / "probe.sqlite3"
    with sqlite3.connect(path) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("CREATE TABLE payments (payment_id TEXT, status TEXT)")
        writer.execute("CREATE TABLE batch_replicas (replica TEXT, seen_at_us INTEGER)")
        writer.execute("INSERT INTO payments VALUES ('pay_1', 'SUCCEEDED')")
    db = Database(path)
    try:
        for sql, changed in [("UPDATE batch_replicas SET seen_at_us = 2", False),
                             ("INSERT INTO batch_replicas VALUES ('r', 1)", False),
                             ("UPDATE payments SET status = 'SUCCEEDED'", False),
                             ("UPDATE payments SET status = 'FAILED'", True),
                             ("INSERT INTO payments VALUES ('pay_2', 'FAILED')", True)]:
            db.mark_before()
            with sqlite3.connect(path) as writer:
                writer.execute(sql)
            assert db.changed_since_before() is changed, sql
    finally:
        db.close()
