"""Channels misbehaving at run time: latency spikes, error bursts, hangs, a
channel killed mid-call, compensation that fails first. After each one the
channels' books must agree with paygrid's (tests/support/ledger_check.py): nothing
charged without a record, no success without a charge, nothing left
unsettled. The long, seeded version is scripts/reliability_faults."""

from __future__ import annotations

import asyncio
import time

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.circuit_breaker import BreakerState
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.conftest import TEST_CHANNELS, channel, leg, pay_request
from tests.support.ledger_check import assert_books_agree
from tests.support.server_process import wait_for

S = pb  # statuses


async def _final(paygrid, payment_id: str, timeout_s: float = 60) -> pb.Payment:
    """The payment once it is no longer PROCESSING (the resolver finishes it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        payment = (await paygrid.stub.GetPayment(
            pb.GetPaymentRequest(payment_id=payment_id), timeout=10)).payment
        if payment.status != S.PAYMENT_STATUS_PROCESSING:
            return payment
        assert time.monotonic() < deadline, f"still PROCESSING: {payment}"
        await asyncio.sleep(0.05)


async def test_latency_spike_beyond_the_timeout_fails_over_and_the_late_charge_is_fenced(
        start_paygrid) -> None:
    # A timeout no unspiked call gets near, even on a busy machine.
    paygrid = await start_paygrid((channel("card", timeout_ms=800), *TEST_CHANNELS[1:]))
    card = paygrid.simulator("card")
    card.faults.slow_down(2_000, calls=4)
    routed = [pay_request(f"k-spike-{i}", leg(f"merchant_{i}")) for i in range(3)]
    pinned = pay_request("k-spike-pinned", leg("merchant_p", channel="card"))
    answers = await asyncio.gather(*(paygrid.stub.Pay(r, timeout=10) for r in (*routed, pinned)))
    *moved, stuck = [a.payment for a in answers]
    assert card.faults.charges_slowed == 4
    for payment in moved:  # fenced at card, then charged at the wallet
        assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
        assert payment.legs[0].channel == "wallet" and payment.legs[0].attempts == 2
    # A leg pinned to the slow channel has nowhere to go: a definite FAILED.
    assert stuck.status == S.PAYMENT_STATUS_FAILED
    assert stuck.legs[0].failure.reason == "CHANNEL_TIMEOUT"

    await card.finish_late_work()  # the spiked charges reach card's books now
    for payment in (*moved, stuck):
        key = f"{payment.payment_id}.0"
        assert card.ledger.charge_requests[key] == 1  # it did arrive, late...
        assert card.ledger.get(key).status is ChargeStatus.VOIDED  # ...and met the fence
    assert card.ledger.captured() == []
    # The spike is over: card takes routed legs again.
    after = (await paygrid.stub.Pay(pay_request("k-after-spike", leg()), timeout=10)).payment
    assert after.status == S.PAYMENT_STATUS_SUCCEEDED and after.legs[0].channel == "card"
    assert_books_agree(paygrid)


async def test_an_error_burst_opens_the_breaker_and_a_good_probe_closes_it(
        start_paygrid) -> None:
    # A pause long enough for the checks made while open, even on a busy machine.
    paygrid = await start_paygrid(TEST_CHANNELS, breaker_failure_threshold=3,
                                  breaker_open_ms=2_000)
    card, breaker = paygrid.simulator("card"), paygrid.app.breakers["card"]
    card.faults.fail_charges(1_000)
    for i in range(2):  # two tries at card each, then the wallet
        payment = (await paygrid.stub.Pay(pay_request(f"k-burst-{i}", leg()), timeout=10)).payment
        assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
        assert payment.legs[0].channel == "wallet"
    assert breaker.state is BreakerState.OPEN
    calls_when_opened = card.charge_calls

    # Open: routed legs go straight to the wallet, pinned legs fail fast, explained.
    routed = (await paygrid.stub.Pay(pay_request("k-open-routed", leg()), timeout=10)).payment
    assert routed.legs[0].channel == "wallet" and routed.legs[0].attempts == 1
    pinned = (await paygrid.stub.Pay(pay_request("k-open-pinned", leg(channel="card")),
                                     timeout=10)).payment
    assert pinned.status == S.PAYMENT_STATUS_FAILED
    assert pinned.legs[0].failure.reason == "CIRCUIT_OPEN"
    assert "circuit is open" in pinned.legs[0].failure.message
    assert pinned.legs[0].attempts == 0
    assert card.charge_calls == calls_when_opened

    # The channel recovers; after the pause one probe goes through and closes
    # it (a failing probe reopening it: test_circuit_breaker.py, the script).
    card.faults.clear()
    await wait_for(lambda: breaker.state is BreakerState.HALF_OPEN, "the breaker's pause")
    probe = (await paygrid.stub.Pay(pay_request("k-good-probe", leg(channel="card")),
                                    timeout=10)).payment
    assert probe.status == S.PAYMENT_STATUS_SUCCEEDED
    assert breaker.state is BreakerState.CLOSED
    back = (await paygrid.stub.Pay(pay_request("k-closed", leg()), timeout=10)).payment
    assert back.legs[0].channel == "card" and back.legs[0].attempts == 1
    # Card charged only after it recovered; every failed call there was fenced.
    assert {c.idempotency_key for c in card.ledger.captured()} == {
        f"{probe.payment_id}.0", f"{back.payment_id}.0"}
    assert_books_agree(paygrid)


async def test_a_hanging_channel_is_fenced_and_its_late_charges_refused(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", timeout_ms=300), *TEST_CHANNELS[1:]))
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    answers = await asyncio.gather(*(
        paygrid.stub.Pay(pay_request(f"k-hang-{i}", leg(f"merchant_{i}")), timeout=10)
        for i in range(4)))
    payments = [a.payment for a in answers]
    assert card.faults.charges_held == 4
    assert {p.legs[0].channel for p in payments} == {"wallet"}
    assert {p.status for p in payments} == {S.PAYMENT_STATUS_SUCCEEDED}

    card.faults.release_charges()  # the channel wakes up and processes what it had
    await card.finish_late_work()
    for payment in payments:
        key = f"{payment.payment_id}.0"
        assert card.ledger.charge_requests[key] == 1
        assert card.ledger.get(key).status is ChargeStatus.VOIDED
    assert card.ledger.captured() == []
    assert len(paygrid.ledger("wallet").captured()) == 4
    assert_books_agree(paygrid)


async def test_a_channel_killed_mid_call_leaves_legs_unknown_until_it_is_back(
        start_paygrid) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    paygrid = await start_paygrid((channel("card", target=f"127.0.0.1:{sim_port}",
                                           timeout_ms=10_000),),
                                  recovery_interval_ms=200)
    independent = pb.PAYMENT_MODE_INDEPENDENT
    charged = [pay_request(f"k-kill-c{i}", leg(f"hang_after_charge_{i}"), mode=independent)
               for i in range(3)]  # the channel books these; the answers never leave
    unsent = [pay_request(f"k-kill-u{i}", leg(f"timeout_{i}"), mode=independent)
              for i in range(3)]  # these it never books
    calls = [asyncio.ensure_future(paygrid.stub.Pay(r, timeout=30)) for r in (*charged, *unsent)]
    await card.wait_until(lambda: card.charges_in_progress == 6 and len(card.ledger.charges) == 3,
                   "six charges in flight at the channel")
    await sim_server.stop(None)  # killed with six calls in flight
    payments = [(await call).payment for call in calls]
    for payment in payments:  # never guessed: unknown, and the payment keeps going
        assert payment.status == S.PAYMENT_STATUS_PROCESSING
        assert payment.legs[0].status == S.LEG_STATUS_UNKNOWN
        assert payment.legs[0].failure.reason == "OUTCOME_UNKNOWN"
    assert_books_agree(paygrid, card, settled=False)

    sim_server, card, _ = await start_simulator("card", SimulatorBehaviour(),
                                                f"127.0.0.1:{sim_port}", ledger=card.ledger)
    try:
        finals = [await _final(paygrid, p.payment_id) for p in payments]
        for payment in finals[:3]:
            assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
            charge = card.ledger.get(f"{payment.payment_id}.0")
            assert payment.legs[0].channel_reference == charge.charge_id
        for payment in finals[3:]:
            assert payment.status == S.PAYMENT_STATUS_FAILED
            assert payment.legs[0].failure.reason == "INTERRUPTED"
            fence = card.ledger.get(f"{payment.payment_id}.0")
            assert fence.status is ChargeStatus.VOIDED and fence.amount is None
        assert_books_agree(paygrid, card)
    finally:
        await sim_server.stop(None)


async def test_all_or_nothing_compensation_completes_when_the_void_first_fails(
        paygrid) -> None:
    payment = (await paygrid.stub.Pay(pay_request(
        "k-aon-void", leg("reversal_fails_once_hotel"), leg("decline_insufficient_funds")),
        timeout=10)).payment
    key = f"{payment.payment_id}.0"
    card = paygrid.simulator("card")
    assert card.reversal_calls[key] == 2  # the void failed UNAVAILABLE, then went through
    assert payment.status == S.PAYMENT_STATUS_FAILED
    assert payment.failure.reason == "INSUFFICIENT_FUNDS"
    assert payment.failure.decline_code == "insufficient_funds"
    assert [l.status for l in payment.legs] == [S.LEG_STATUS_VOIDED, S.LEG_STATUS_FAILED]
    assert payment.legs[0].failure.reason == "OTHER_LEG_FAILED"
    assert card.ledger.get(key).status is ChargeStatus.VOIDED
    assert paygrid.captured_everywhere() == []
    assert_books_agree(paygrid)


async def test_all_or_nothing_compensation_that_keeps_failing_is_finished_by_the_resolver(
        start_paygrid) -> None:
    paygrid = await start_paygrid(recovery_interval_ms=200)
    card = paygrid.simulator("card")
    card.faults.fail_reversals(limits.SETTLEMENT_TRIES + 1)  # more than one pass retries
    payment = (await paygrid.stub.Pay(pay_request(
        "k-aon-stuck", leg("hotel_0001"), leg("decline_do_not_honor")), timeout=10)).payment
    # Not reversed yet: still PROCESSING, never reported FAILED while money is held.
    assert payment.status == S.PAYMENT_STATUS_PROCESSING
    assert payment.legs[0].status == S.LEG_STATUS_SUCCEEDED
    final = await _final(paygrid, payment.payment_id)
    assert final.status == S.PAYMENT_STATUS_FAILED
    assert final.failure.reason == "DECLINED" and final.failure.decline_code == "do_not_honor"
    assert [l.status for l in final.legs] == [S.LEG_STATUS_VOIDED, S.LEG_STATUS_FAILED]
    assert card.faults.reversals_failed == limits.SETTLEMENT_TRIES + 1
    assert card.ledger.get(f"{payment.payment_id}.0").status is ChargeStatus.VOIDED
    assert paygrid.captured_everywhere() == []
    assert_books_agree(paygrid)
