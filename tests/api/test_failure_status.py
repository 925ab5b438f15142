"""A failure in a result (a leg's, the payment's, a batch item's) comes as a
google.rpc.Status too, with the code and details a call error would carry:
ErrorInfo (reason, domain "paygrid", the channel's decline code) and a
RetryInfo where a new attempt can succeed (docs/api/errors.md)."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.errors import PaygridError
from paygrid_server.domain.model.payment import FailureReason
from paygrid_server.transport.failure_status import FAILURE_CODES
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import leg, pay_request

ERRORS_DOC = Path(__file__).resolve().parents[2] / "docs" / "api" / "errors.md"


def _details(status: status_pb2.Status) -> dict[str, object]:
    found: dict[str, object] = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.DESCRIPTOR.name] = detail
    return found


def test_every_reason_the_domain_can_give_has_a_code_and_a_row_in_the_errors_doc() -> None:
    assert set(FAILURE_CODES) == set(FailureReason)
    errors = ERRORS_DOC.read_text()
    documented = {reason for row in errors.splitlines() if row.startswith("| `")
                  for reason in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
    assert {r.value for r in FailureReason} <= documented


async def test_a_declined_leg_carries_failed_precondition_and_the_decline_code(paygrid) -> None:
    payment = (await paygrid.stub.Pay(pay_request("k-dnh", leg("decline_do_not_honor")),
                                      timeout=10)).payment
    failure = payment.legs[0].failure
    assert failure.status.code == code_pb2.FAILED_PRECONDITION
    assert failure.status.message == failure.message
    details = _details(failure.status)
    info = details["ErrorInfo"]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "DECLINED", "paygrid", {"decline_code": "do_not_honor"})
    assert "RetryInfo" not in details  # the payer must act first
    # The payment's failure is its failing leg's, as a status too.
    assert payment.failure.status.code == code_pb2.FAILED_PRECONDITION
    assert _details(payment.failure.status)["ErrorInfo"].reason == "DECLINED"
    # The Python client reads it like a call error.
    read = PaygridError.from_status(failure.status)
    assert (read.code, read.reason, read.metadata, read.retry_delay_s) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DECLINED", {"decline_code": "do_not_honor"}, None)


async def test_a_leg_whose_channel_was_down_carries_unavailable_and_retry_info(paygrid) -> None:
    paygrid.simulator("card").faults.fail_charges(100)
    payment = (await paygrid.stub.Pay(pay_request("k-down", leg(channel="card")),
                                      timeout=10)).payment
    failure = payment.legs[0].failure
    assert failure.reason == "CHANNEL_UNAVAILABLE"
    assert failure.status.code == code_pb2.UNAVAILABLE
    details = _details(failure.status)
    assert details["ErrorInfo"].reason == "CHANNEL_UNAVAILABLE"
    assert details["ErrorInfo"].domain == "paygrid"
    assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0


async def test_batch_items_carry_the_same_statuses(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        tx("ok"), tx("dnh", payee="decline_do_not_honor"), tx("zero", amount_minor=0)))
    results = reply.results
    assert results["ok"].status == batch_pb.BATCH_ITEM_STATUS_SUCCEEDED
    assert not results["ok"].HasField("failure")
    declined = results["dnh"].failure
    assert declined.status.code == code_pb2.FAILED_PRECONDITION
    info = _details(declined.status)["ErrorInfo"]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "DECLINED", "paygrid", {"decline_code": "do_not_honor"})
    [rejected] = reply.rejected
    assert rejected.failure.status.code == code_pb2.INVALID_ARGUMENT
    assert _details(rejected.failure.status)["ErrorInfo"].reason == "INVALID_ITEM"
