"""A channel configured with `simulator = { in_process = true }`: the
simulator's servicer called directly, without gRPC. Batches over it are
charged with ChargeBatch, as over gRPC, and payments work the same."""

from __future__ import annotations

import pytest

from paygrid.channel.v1 import payment_channel_pb2 as cpb
from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as bpb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.channels.in_process_channel import InProcessPaymentChannel
from paygrid_server.domain.ports.bulk_charges import ChargeOrders
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.payment_channel import (
    BulkChargeUnsupported,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeStatus,
)
from paygrid_server.simulator.channel_ledger import ChannelLedger
from paygrid_server.simulator.channel_simulator import ChannelSimulator, SimulatorBehaviour
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import channel, leg, pay_request

SUCCEEDED, FAILED = bpb.BATCH_ITEM_STATUS_SUCCEEDED, bpb.BATCH_ITEM_STATUS_FAILED


def _in_process(behaviour: SimulatorBehaviour = SimulatorBehaviour()):
    return channel("card", simulator=behaviour, simulator_in_process=True)


async def test_a_batch_is_charged_with_one_charge_batch_call_per_group(start_paygrid) -> None:
    paygrid = await start_paygrid((_in_process(),))
    assert paygrid.app.simulators["card"][0] is None  # no gRPC server: called directly
    items = [tx(f"r{i:03d}", amount_minor=100 + i) for i in range(249)] + [
        tx("nsf", payee="decline_insufficient_funds")]
    reply = await submit(batch_stub(paygrid.channel), header(max_group_size=100),
                         chunk(*items[:200]), chunk(*items[200:]))
    assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED
    assert (reply.summary.counts.succeeded, reply.summary.counts.failed) == (249, 1)
    card = paygrid.simulator("card")
    assert (card.charge_batch_calls, card.charge_calls) == (3, 0)
    assert set(card.ledger.charge_requests.values()) == {1}
    by_payee = {c.payee: c for c in card.ledger.captured()}
    assert len(by_payee) == 249
    for i in range(249):
        charge = by_payee[f"payee_r{i:03d}"]
        assert reply.results[f"r{i:03d}"].channel_reference == charge.charge_id
        assert charge.amount.amount_minor == 100 + i
    assert reply.results["nsf"].status == FAILED
    assert reply.results["nsf"].failure.decline_code == "insufficient_funds"


async def test_a_servicer_without_charge_batch_gets_the_batch_done_per_item(
        start_paygrid) -> None:
    paygrid = await start_paygrid((_in_process(SimulatorBehaviour(bulk_charge=False)),))
    reply = await submit(batch_stub(paygrid.channel), header(max_group_size=10, parallelism=1),
                         chunk(*(tx(f"r{i:02d}") for i in range(25))))
    assert reply.summary.counts.succeeded == 25
    assert all(r.status == SUCCEEDED for r in reply.results.values())
    card = paygrid.simulator("card")
    assert (card.charge_batch_calls, card.charge_calls) == (1, 25)
    assert len(card.ledger.captured()) == 25


async def test_pay_works_through_it(start_paygrid) -> None:
    paygrid = await start_paygrid((_in_process(),))
    response = await paygrid.stub.Pay(pay_request("k1", leg(currency="EUR")), timeout=5)
    payment = response.payment
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    [result] = payment.legs
    assert result.channel == "card"
    charge = paygrid.ledger("card").get(f"{payment.payment_id}.0")
    assert result.channel_reference == charge.charge_id
    declined = await paygrid.stub.Pay(pay_request(
        "k2", leg(payee="decline_do_not_honor", currency="EUR")), timeout=5)
    assert declined.payment.status == pb.PAYMENT_STATUS_FAILED
    assert declined.payment.legs[0].failure.decline_code == "do_not_honor"
    assert (paygrid.simulator("card").charge_calls,
            paygrid.simulator("card").charge_batch_calls) == (2, 0)


@pytest.mark.parametrize("behaviour, payee, error", [
    (SimulatorBehaviour(bulk_charge=False), "m1", BulkChargeUnsupported),
    (SimulatorBehaviour(), "hang_after_charge_1", ChannelTimeout),
])
async def test_the_adapter_maps_what_the_servicer_aborts_with(behaviour, payee, error) -> None:
    servicer = ChannelSimulator(ChannelLedger("card"), behaviour)
    adapter = InProcessPaymentChannel("card", servicer)
    orders = ChargeOrders(["k1", "k2"], "p1", ["m0", payee],
                          [Money("EUR", 100), Money("EUR", 200)], ["ref", "ref"])
    with pytest.raises(error):
        await adapter.charge_batch(orders, 200)
    assert servicer.charge_batch_calls == 1
    record = await adapter.charge("k1", "p1", "m0", Money("EUR", 100), "ref", 1_000)
    assert record.status is ChargeStatus.CAPTURED
    assert list(await adapter.charge_batch(ChargeOrders([], "p1", [], [], []), 1_000)) == []
    assert servicer.charge_batch_calls == 1  # an empty call is not made


@pytest.mark.parametrize("hang, error", [
    ("timeout_1", ChannelTimeout), ("hang_after_charge_1", ChannelTimeout),
    ("flaky_1", ChannelUnavailable), ("held", ChannelTimeout), ("frozen", ChannelTimeout),
    ("slowed", ChannelTimeout), ("failing", ChannelUnavailable),
])
async def test_a_charge_that_waits_or_fails_goes_the_full_way_in_process(hang, error) -> None:
    """A charge the simulator cannot answer at once (a test value or a fault
    makes it wait or fail) goes the full way, under the call's deadline: the
    at-once path never skips a wait or a fault."""
    servicer = ChannelSimulator(ChannelLedger("card"), SimulatorBehaviour())
    adapter = InProcessPaymentChannel("card", servicer)
    payee = hang if hang.endswith("_1") else "m1"
    if hang == "held":
        servicer.faults.hold_charges()
    elif hang == "frozen":
        servicer.faults.freeze()
    elif hang == "slowed":
        servicer.faults.slow_down(10_000, calls=1)
    elif hang == "failing":
        servicer.faults.fail_charges(1)
    with pytest.raises(error):
        await adapter.charge("k1", "p1", payee, Money("EUR", 100), "ref", 50)
    servicer.faults.clear()
    # At rest again: answered at once, the timeout too short for any wait.
    record = await adapter.charge("k2", "p1", "m1", Money("EUR", 100), "ref", 1)
    assert record.status is ChargeStatus.CAPTURED


async def test_the_at_once_answer_is_the_full_paths_answer() -> None:
    """The same requests answered at once (at rest) and the full way (a
    fault that lets the call pass after a moment) give the same messages,
    declines included, and count the same calls."""
    class NoMetadata:
        @staticmethod
        def invocation_metadata() -> tuple:
            return ()

    answers = []
    for slowed in (False, True):
        servicer = ChannelSimulator(ChannelLedger("card"), SimulatorBehaviour())
        responses = []
        for key, payee in (("k1", "m1"), ("k2", "decline_do_not_honor"), ("k1", "m1")):
            if slowed:
                servicer.faults.slow_down(1, calls=1)
            request = cpb.ChargeRequest(idempotency_key=key, payer="p1", payee=payee,
                                        amount=money_pb2.Money(currency="EUR", amount_minor=250),
                                        reference="ref")
            responses.append(await servicer.Charge(request, NoMetadata()))
        assert servicer.faults.charges_slowed == (3 if slowed else 0)
        for response in responses:
            assert response.charge.created_at.ToMicroseconds() > 0
            response.charge.ClearField("created_at")
        answers.append((responses, servicer.charge_calls, servicer.peak_charges_in_progress,
                        servicer.ledger.charge_requests))
    assert answers[0] == answers[1]
    [captured, declined, replayed] = answers[0][0]
    assert captured.charge.status == cpb.CHARGE_STATUS_CAPTURED
    assert captured.charge.amount == money_pb2.Money(currency="EUR", amount_minor=250)
    assert declined.charge.status == cpb.CHARGE_STATUS_DECLINED
    assert declined.charge.decline_code == "do_not_honor"
    assert replayed == captured
