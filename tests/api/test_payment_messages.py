"""Payment -> paygrid.v1.Payment is built in place for speed (it runs for
Pay's answer and for each event snapshot): its times and durations must be
exactly what protobuf's own FromMicroseconds gives, on both sides of zero
and of a whole second."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Leg, LegRequest, LegStatus, Payment, PaymentMode, PaymentStatus)
from paygrid_server.transport.payment_messages import payment_pb

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
