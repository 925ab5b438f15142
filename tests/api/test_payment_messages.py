"""Payment -> paygrid.v1.Payment is built in place for speed (it runs for
Pay's answer and for each event snapshot): its times and durations must be
exactly what protobuf's own FromMicroseconds gives, on both sides of zero
and of a whole second; and a message refreshed from an earlier state must
be, byte for byte, the one built for the new state."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Failure, FailureReason, Leg, LegRequest, LegStatus, Payment, PaymentMode, PaymentStatus)
from paygrid_server.transport.payment_messages import payment_pb, refresh_payment_pb
from paygrid_server.transport.recent_payment_messages import RecentPaymentMessages

MICROSECONDS = [0, 1, 999_999, 1_000_000, 1_000_001, 2_500_000, -1, -999_999, -1_000_000,
                -1_000_001, -2_500_000]


def _payment(received_at_us: int, completed_at_us: int | None, latency_us: int) -> Payment:
    return Payment(
        payment_id="pay_1", tenant_id="dev", idempotency_key="k", fingerprint="f",
        payer="acct_000012345678", mode=PaymentMode.ALL_OR_NOTHING,
        legs=[Leg(0, LegRequest("hotel_4711", Money("EUR", 45_000), "", ""),
                  status=LegStatus.SUCCEEDED, latency_us=latency_us)],
        metadata={"b": "2", "a": "1"}, received_at_us=received_at_us,
        status=PaymentStatus.SUCCEEDED, completed_at_us=completed_at_us, version=3)


@pytest.mark.parametrize("us", MICROSECONDS)
def test_durations_and_times_match_from_microseconds(us: int) -> None:
    received = 1_764_000_000_000_000 + 250
    message = payment_pb(_payment(received, received + us, us))
    expected_duration = duration_pb2.Duration()
    expected_duration.FromMicroseconds(us)
    assert message.timing.processing_time == expected_duration
    assert message.legs[0].latency == expected_duration
    expected_time = timestamp_pb2.Timestamp()
    expected_time.FromMicroseconds(received + us)
    assert message.timing.completed_at == expected_time
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(received)
    assert message.timing.received_at == stamp


def test_a_processing_payment_has_no_completion_times() -> None:
    message = payment_pb(_payment(5, None, 0))
    assert message.timing.received_at.nanos == 5_000
    assert not message.timing.HasField("completed_at")
    assert not message.timing.HasField("processing_time")
    assert not message.HasField("failure") and not message.legs[0].HasField("failure")


def _states() -> list[Payment]:
    """One payment (the same request) in states that differ in every field
    its life changes: status, version, completion, failures, a leg's
    channel, attempts, latency and refunds."""
    failure = Failure(FailureReason.DECLINED, "card declined", "05")
    states = []
    for status, completed, leg_status, leg_failure, payment_failure in [
            (PaymentStatus.PROCESSING, None, LegStatus.PENDING, None, None),
            (PaymentStatus.PROCESSING, None, LegStatus.UNKNOWN, failure, None),
            (PaymentStatus.SUCCEEDED, 2_000_250, LegStatus.SUCCEEDED, None, None),
            (PaymentStatus.FAILED, 1_500_000, LegStatus.FAILED, failure, failure)]:
        payment = _payment(1_000_000, completed, 0)
        payment.status, payment.failure, payment.version = status, payment_failure, len(states) + 1
        first, second = payment.legs[0], Leg(1, LegRequest("flight_0815", Money("EUR", 31_999),
                                                           "card", "ref-2"))
        first.status, first.failure = leg_status, leg_failure
        if leg_status is not LegStatus.PENDING:
            first.channel, first.channel_reference = "card", f"ch_{len(states)}"
            first.attempts, first.latency_us = len(states), 1_250_000 * len(states)
            first.refunded_minor = 100 * len(states)
        payment.legs.append(second)
        states.append(payment)
    return states


@pytest.mark.parametrize("before", range(4))
@pytest.mark.parametrize("after", range(4))
def test_a_refreshed_message_is_the_new_states_message(before: int, after: int) -> None:
    states = _states()
    message = refresh_payment_pb(payment_pb(states[before]), states[after])
    assert (message.SerializeToString(deterministic=True)
            == payment_pb(states[after]).SerializeToString(deterministic=True))


def test_recent_messages_are_kept_while_the_payment_is_processing_and_bounded() -> None:
    states = _states()
    recent = RecentPaymentMessages(max_messages=2)
    for state in states:  # PROCESSING, PROCESSING, SUCCEEDED, FAILED
        message = recent.message(state)
        assert (message.SerializeToString(deterministic=True)
                == payment_pb(state).SerializeToString(deterministic=True))
    assert len(recent) == 0  # the last snapshots were final: nothing more to refresh
    for n in range(3):
        other = _states()[0]
        other.payment_id = f"pay_{n}"
        recent.message(other)
    assert len(recent) == 2
