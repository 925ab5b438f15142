"""The chaos runs' delivery checker can fail: fed a deliveries file with a
lost version, an out-of-order first delivery, a stale last payload or a seq
gap, it reports each; duplicates are counted, not failed. Files are written
and read back as the consumers write them (tests/support/event_delivery_check.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from paygrid.v1 import payment_service_pb2 as pb
from tests.support.event_delivery_check import (Delivery, DeliveryLog, FinalState, Payload,
                                                check_deliveries, read_deliveries)

def _payload(version: int, status: int = pb.PAYMENT_STATUS_PROCESSING) -> Payload:
    return Payload.of(pb.Payment(payment_id="pay_a", status=status, version=version))


def _events(aggregate: str = "pay_a", versions: int = 4, first_seq: int = 10) -> list[Delivery]:
    """Versions 1..n of one payment, every other seq (the gaps are another tenant's)."""
    return [Delivery("watch", 1, first_seq + 2 * v, f"{aggregate}-ev{v}", "io.paygrid.x.v1",
                     "payment", aggregate, v,
                     _payload(v, pb.PAYMENT_STATUS_SUCCEEDED if v == versions else
                              pb.PAYMENT_STATUS_PROCESSING)) for v in range(1, versions + 1)]


FINAL = FinalState(("payment", "pay_a"), 4, _payload(4, pb.PAYMENT_STATUS_SUCCEEDED))


def _listed(deliveries: list[Delivery]) -> dict[int, str]:
    return {d.seq: d.event_id for d in deliveries}


def _check(tmp_path: Path, deliveries: list[Delivery], finals=(FINAL,), listed=None):
    """Through a file, as in a run."""
    (tmp_path / "deliveries.jsonl").unlink(missing_ok=True)
    log = DeliveryLog(tmp_path / "deliveries.jsonl")
    for delivery in deliveries:
        log.append(delivery)
    log.close()
    return check_deliveries(read_deliveries(tmp_path / "deliveries.jsonl"), finals, listed)


def test_every_version_once_in_order_with_the_final_payload_passes(tmp_path: Path) -> None:
    events = _events()
    verdict = _check(tmp_path, events, listed=_listed(events))
    assert verdict.ok, verdict.describe()
    assert (verdict.deliveries, verdict.events, verdict.duplicates) == (4, 4, 0)


def test_duplicates_are_counted_not_failed(tmp_path: Path) -> None:
    events = _events()
    # A restarted consumer gets versions 2..4 again, from an older cursor.
    again = [replace(d, session=2) for d in events[1:]]
    verdict = _check(tmp_path, events + again, listed=_listed(events))
    assert verdict.ok, verdict.describe()
    assert (verdict.deliveries, verdict.events, verdict.duplicates) == (7, 4, 3)


def test_a_lost_version_is_reported(tmp_path: Path) -> None:
    events = _events()
    verdict = _check(tmp_path, events[:1] + events[2:])
    assert not verdict.ok
    assert verdict.lost == ["watch: payment/pay_a (final version 4): missing 2, beyond final none"]


def test_a_version_beyond_the_final_one_is_reported(tmp_path: Path) -> None:
    verdict = _check(tmp_path, _events(), finals=(replace(FINAL, version=3),))
    assert verdict.lost == ["watch: payment/pay_a (final version 3): missing none, "
                            "beyond final 4"]


def test_an_out_of_order_first_delivery_is_reported(tmp_path: Path) -> None:
    events = _events()
    verdict = _check(tmp_path, [events[0], events[2], events[1], events[3]])
    assert not verdict.ok and not verdict.lost
    assert verdict.out_of_order == ["watch: payment/pay_a version 2 first delivered after "
                                    "version 3"]


def test_a_duplicate_of_an_earlier_version_is_not_out_of_order(tmp_path: Path) -> None:
    events = _events()
    verdict = _check(tmp_path, events[:3] + [events[1]] + events[3:])
    assert verdict.ok and verdict.duplicates == 1, verdict.describe()


def test_a_stale_last_payload_is_reported(tmp_path: Path) -> None:
    events = _events()
    # Version 4 carried the payment still PROCESSING: not what GetPayment reads.
    events[3] = replace(events[3], payload=_payload(4))
    verdict = _check(tmp_path, events)
    assert not verdict.ok and not verdict.lost
    assert len(verdict.stale) == 1
    assert "delivered paygrid.v1.Payment PAYMENT_STATUS_PROCESSING" in verdict.stale[0]
    assert "server holds paygrid.v1.Payment PAYMENT_STATUS_SUCCEEDED" in verdict.stale[0]


def test_a_payload_differing_only_outside_its_status_is_stale_too(tmp_path: Path) -> None:
    final = replace(FINAL, payload=Payload.of(pb.Payment(
        payment_id="pay_a", status=pb.PAYMENT_STATUS_SUCCEEDED, version=4, payer="someone")))
    verdict = _check(tmp_path, _events(), finals=(final,))
    assert len(verdict.stale) == 1, verdict.describe()


def test_a_seq_gap_is_reported(tmp_path: Path) -> None:
    events = _events()
    other = _events("pay_b", versions=1, first_seq=30)
    listed = _listed(events + other)
    finals = (FINAL, FinalState(("payment", "pay_b"), 1, other[0].payload))
    # pay_b's only event is missing: both its version and its seq are reported.
    verdict = _check(tmp_path, events, finals=finals, listed=listed)
    assert verdict.seq_gaps == ["watch: 1 seqs ListEvents lists were never delivered: 32"]
    assert len(verdict.lost) == 1


def test_seqs_going_down_across_a_reconnect_are_reported(tmp_path: Path) -> None:
    first = _events()
    second = _events("pay_b", versions=1, first_seq=5)  # seq 7, after seq 18
    finals = (FINAL, FinalState(("payment", "pay_b"), 1, second[0].payload))
    verdict = _check(tmp_path, first + [replace(second[0], session=2)], finals=finals,
                     listed=_listed(first + second))
    assert verdict.seq_gaps == ["watch: seq 7 first delivered after seq 18 (session 2)"]


def test_a_consumer_without_seqs_is_checked_per_aggregate_only(tmp_path: Path) -> None:
    """As the RabbitMQ relay's consumer will be: seq 0, another name."""
    events = [replace(d, consumer="rabbitmq", seq=0) for d in _events()]
    verdict = _check(tmp_path, events, listed=_listed(_events()))
    assert verdict.ok, verdict.describe()
    verdict = _check(tmp_path, events[:3], listed=_listed(_events()))
    assert verdict.lost and not verdict.seq_gaps


def test_an_event_redelivered_with_other_contents_is_reported(tmp_path: Path) -> None:
    events = _events()
    changed = replace(events[1], session=2, version=3)
    verdict = _check(tmp_path, events + [changed])
    assert verdict.problems == ["watch: event pay_a-ev2 delivered again with other contents"]
