"""Batch groups are charged with one ChargeBatch call per group, against real
servers and simulators, with every guarantee of one Charge per item: per-item
declines, the same keys on retry, no second charge on replay, per-item
charging for a channel without ChargeBatch, and an unanswered bulk call
settled item by item."""

from __future__ import annotations

import grpc
import pytest

from paygrid.channel.v1 import payment_channel_pb2 as cpb
from paygrid.channel.v1 import payment_channel_pb2_grpc as cpb_grpc
from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.channels.grpc_payment_channel import GrpcPaymentChannel
from paygrid_server.domain.ports.bulk_charges import ChargeOrders
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import (
    MAX_CHARGES_PER_BATCH_CALL,
    BulkChargeUnsupported,
    ChargeStatus,
)
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import channel

SUCCEEDED, FAILED = pb.BATCH_ITEM_STATUS_SUCCEEDED, pb.BATCH_ITEM_STATUS_FAILED


def _captured_once_each(ledger, payees: list[str]) -> None:
    """The channel holds exactly one capture per payee, and nothing else."""
    captured = sorted(c.payee for c in ledger.captured())
    assert captured == sorted(payees)


async def test_each_group_is_charged_with_one_charge_batch_call(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    items = [tx(f"r{i:03d}", amount_minor=100 + i) for i in range(250)]
    reply = await submit(batch_stub(paygrid.channel), header(max_group_size=100),
                         chunk(*items[:200]), chunk(*items[200:]))
    assert reply.summary.counts.succeeded == 250 and len(reply.groups) == 3
    card = paygrid.simulator("card")
    assert (card.charge_batch_calls, card.charge_calls) == (3, 0)
    ledger = card.ledger
    assert len(ledger.charge_requests) == 250
    assert set(ledger.charge_requests.values()) == {1}
    _captured_once_each(ledger, [f"payee_r{i:03d}" for i in range(250)])
    by_payee = {c.payee: c for c in ledger.captured()}
    for i in range(250):
        result = reply.results[f"r{i:03d}"]
        charge = by_payee[f"payee_r{i:03d}"]
        # Each record went back to its own item, not to a neighbour.
        assert result.channel_reference == charge.charge_id
        assert charge.amount.amount_minor == 100 + i


async def test_declines_by_test_value_are_per_item_in_a_bulk_call(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        tx("ok-1"), tx("nsf", payee="decline_insufficient_funds"), tx("ok-2"),
        tx("dnh", payee="decline_do_not_honor"), tx("ok-3")))
    assert paygrid.simulator("card").charge_batch_calls == 1
    assert paygrid.simulator("card").charge_calls == 0
    results = reply.results
    assert [results[r].status for r in ("ok-1", "ok-2", "ok-3")] == [SUCCEEDED] * 3
    assert results["nsf"].status == FAILED and results["dnh"].status == FAILED
    assert results["nsf"].failure.reason == "INSUFFICIENT_FUNDS"
    assert results["nsf"].failure.decline_code == "insufficient_funds"
    assert results["dnh"].failure.decline_code == "do_not_honor"
    assert (reply.summary.counts.succeeded, reply.summary.counts.failed) == (3, 2)
    statuses = {c.payee: c.status for c in paygrid.ledger("card").charges.values()}
    assert statuses["decline_insufficient_funds"] is ChargeStatus.DECLINED
    _captured_once_each(paygrid.ledger("card"), ["payee_ok-1", "payee_ok-2", "payee_ok-3"])


async def test_a_resubmitted_batch_charges_nothing_again(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    stub = batch_stub(paygrid.channel)
    items = [tx(f"r{i:03d}") for i in range(150)]
    first = await submit(stub, header(max_group_size=100), chunk(*items))
    assert first.summary.counts.succeeded == 150
    card = paygrid.simulator("card")
    calls = (card.charge_batch_calls, card.charge_calls)
    assert calls == (2, 0)

    again = await submit(stub, header(max_group_size=100), chunk(*items))
    assert again.summary.counts.succeeded == 150
    assert len(again.already_processed) == 150 and again.groups == []
    assert {r.channel_reference for r in again.already_processed} == {
        r.channel_reference for r in first.results.values()}
    assert (card.charge_batch_calls, card.charge_calls) == calls  # the channel was not called
    assert set(card.ledger.charge_requests.values()) == {1}
    _captured_once_each(card.ledger, [f"payee_r{i:03d}" for i in range(150)])


async def test_an_unavailable_bulk_call_is_retried_whole_with_the_same_keys(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    # A flaky_ payee makes the first call carrying its key fail UNAVAILABLE
    # before anything in it is charged.
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        tx("a"), tx("flaky", payee="flaky_1"), tx("b")))
    assert reply.summary.counts.succeeded == 3
    card = paygrid.simulator("card")
    assert (card.charge_batch_calls, card.charge_calls) == (2, 0)
    assert len(card.ledger.charge_requests) == 3
    assert set(card.ledger.charge_requests.values()) == {1}  # the retry reused every key
    _captured_once_each(card.ledger, ["payee_a", "flaky_1", "payee_b"])


async def test_a_channel_without_charge_batch_gets_the_batch_done_per_item(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel(
        "card", simulator=SimulatorBehaviour(bulk_charge=False)),))
    stub = batch_stub(paygrid.channel)
    items = [tx(f"r{i:02d}") for i in range(30)] + [tx("nsf", payee="decline_insufficient_funds")]
    reply = await submit(stub, header(max_group_size=10, parallelism=1), chunk(*items))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert (reply.summary.counts.succeeded, reply.summary.counts.failed) == (30, 1)
    assert reply.results["nsf"].failure.decline_code == "insufficient_funds"
    card = paygrid.simulator("card")
    # Asked once; UNIMPLEMENTED is remembered for the channel, so the other
    # groups, and the next batch, go straight to one Charge per item.
    assert (card.charge_batch_calls, card.charge_calls) == (1, 31)
    second = await submit(stub, header("batch-2"), chunk(tx("s1"), tx("s2")))
    assert second.summary.counts.succeeded == 2
    assert (card.charge_batch_calls, card.charge_calls) == (1, 33)
    assert set(card.ledger.charge_requests.values()) == {1}
    _captured_once_each(card.ledger, [f"payee_r{i:02d}" for i in range(30)] + [
        "payee_s1", "payee_s2"])


async def test_a_bulk_call_whose_answer_is_lost_is_settled_item_by_item(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", timeout_ms=300),))
    # Everything in the call is charged, then the answer never comes.
    payees = ["payee_1", "hang_after_charge_1", "payee_2", "payee_3"]
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        *(tx(f"r{i}", payee=payee) for i, payee in enumerate(payees))))
    assert reply.summary.counts.succeeded == 4
    card = paygrid.simulator("card")
    assert card.charge_batch_calls == 1  # a timeout is not retried blindly in bulk
    assert card.charge_calls == 4  # each item asked again with its own key...
    assert set(card.ledger.charge_requests.values()) == {2}
    _captured_once_each(card.ledger, payees)  # ...which only replayed the first charge
    by_payee = {c.payee: c.charge_id for c in card.ledger.captured()}
    assert {r.channel_reference for r in reply.results.values()} == set(by_payee.values())
    assert reply.results["r1"].channel_reference == by_payee["hang_after_charge_1"]


async def test_a_bulk_call_that_times_out_part_way_charges_nothing_twice(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", timeout_ms=300),))
    # The channel stops at the timeout_ charge: the two before it are made,
    # the two after it are not, and the call never answers.
    before, after = ["payee_b1", "payee_b2"], ["payee_a1", "payee_a2"]
    items = [tx(p, payee=p) for p in before] + [tx("stuck", payee="timeout_1")] + [
        tx(p, payee=p) for p in after]
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(*items))
    results = reply.results
    assert [results[p].status for p in before + after] == [SUCCEEDED] * 4
    # The stuck item never reached the books; its key is fenced, so a charge
    # still on its way can no longer move money.
    assert results["stuck"].status == FAILED
    assert results["stuck"].failure.reason == "CHANNEL_TIMEOUT"
    ledger = paygrid.ledger("card")
    fences = [c for c in ledger.charges.values() if c.amount is None]
    assert len(fences) == 1 and fences[0].status is ChargeStatus.VOIDED
    _captured_once_each(ledger, before + after)
    requests = {c.payee: ledger.charge_requests[c.idempotency_key] for c in ledger.captured()}
    # Made by the bulk call and replayed once; made by the per-item Charge only.
    assert requests == {"payee_b1": 2, "payee_b2": 2, "payee_a1": 1, "payee_a2": 1}
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED


async def test_items_of_a_failing_channel_are_fenced_never_failed_unasked(
        start_paygrid) -> None:
    # Every Charge and ChargeBatch fails UNAVAILABLE (which may hide a charge
    # made). The bulk call is retried, then each item is tried on its own
    # until the breaker opens; the rest are only settled. Either way every
    # key ends fenced at the channel before its item is reported failed.
    paygrid = await start_paygrid((channel(
        "card", simulator=SimulatorBehaviour(failure_rate=1.0)),))
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        *(tx(f"r{i:02d}") for i in range(20))))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.failed == 20
    reasons = {r.failure.reason for r in reply.results.values()}
    assert reasons == {"CHANNEL_UNAVAILABLE", "CIRCUIT_OPEN"}
    card = paygrid.simulator("card")
    assert card.charge_batch_calls == 2
    assert card.ledger.captured() == []
    fences = list(card.ledger.charges.values())
    assert len(fences) == 20
    assert all(c.status is ChargeStatus.VOIDED and c.amount is None for c in fences)


# -- the channel protocol itself ----------------------------------------------

def _charge(key: str, payee: str = "m1", amount_minor: int = 700) -> cpb.ChargeRequest:
    return cpb.ChargeRequest(idempotency_key=key, payer="p1", payee=payee,
                             amount=money_pb2.Money(currency="EUR", amount_minor=amount_minor))


@pytest.fixture
async def simulator():
    server, servicer, port = await start_simulator("acq", SimulatorBehaviour())
    channel_ = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, cpb_grpc.PaymentChannelStub(channel_)
    await channel_.close()
    await server.stop(None)


async def test_charge_batch_answers_in_order_and_replays_by_key(simulator) -> None:
    servicer, stub = simulator
    await stub.Void(cpb.VoidRequest(idempotency_key="fenced"))
    request = cpb.ChargeBatchRequest(charges=[
        _charge("k1"), _charge("k2", "decline_do_not_honor"), _charge("fenced"),
        _charge("k3", amount_minor=900)])
    first = (await stub.ChargeBatch(request)).charges
    assert [c.idempotency_key for c in first] == ["k1", "k2", "fenced", "k3"]
    assert [c.status for c in first] == [
        cpb.CHARGE_STATUS_CAPTURED, cpb.CHARGE_STATUS_DECLINED, cpb.CHARGE_STATUS_VOIDED,
        cpb.CHARGE_STATUS_CAPTURED]
    assert first[1].decline_code == "do_not_honor"
    assert not first[2].HasField("amount")  # the fence stands: nothing charged
    assert first[3].amount.amount_minor == 900

    again = (await stub.ChargeBatch(request)).charges  # a replay: first outcomes again
    assert [c.charge_id for c in again] == [c.charge_id for c in first]
    assert len(servicer.ledger.captured()) == 2
    single = await stub.Charge(_charge("k1"))  # the same books as Charge
    assert single.charge.charge_id == first[0].charge_id


@pytest.mark.parametrize("count", [0, MAX_CHARGES_PER_BATCH_CALL + 1])
async def test_charge_batch_refuses_an_empty_or_oversized_call(simulator, count) -> None:
    servicer, stub = simulator
    request = cpb.ChargeBatchRequest(charges=[_charge(f"k{i}") for i in range(count)])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ChargeBatch(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.ledger.charges == {}


async def test_the_adapter_maps_unimplemented_and_remembers_it() -> None:
    server, servicer, port = await start_simulator("old", SimulatorBehaviour(bulk_charge=False))
    adapter = GrpcPaymentChannel("old", f"127.0.0.1:{port}")
    orders = ChargeOrders(["k1"], "p1", ["m1"], [Money("EUR", 100)], ["ref"])
    try:
        for _ in range(2):
            with pytest.raises(BulkChargeUnsupported):
                await adapter.charge_batch(orders, 1_000)
        assert servicer.charge_batch_calls == 1  # the second never left paygrid
        record = await adapter.charge("k1", "p1", "m1", Money("EUR", 100), "ref", 1_000)
        assert record.status is ChargeStatus.CAPTURED
    finally:
        await adapter.close()
        await server.stop(None)
