"""The payment an outcome's snapshot is built from: the saved object, with
each leg's refund columns as stored (a refund may have moved them since the
object was loaded) and the version given, and the saved object itself left
as it is (its transaction may not commit)."""

from __future__ import annotations

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Leg, LegRequest, LegStatus, Payment, PaymentMode
from paygrid_server.storage.payment_rows import payment_after_outcome


def _payment() -> Payment:
    legs = [Leg(i, LegRequest(f"payee_{i}", Money("EUR", 1_000), "", ""),
                status=LegStatus.SUCCEEDED) for i in range(2)]
    return Payment(payment_id="pay_1", tenant_id="dev", idempotency_key="k", fingerprint="f",
                   payer="acct_1", mode=PaymentMode.INDEPENDENT, legs=legs, metadata={},
                   received_at_us=1, version=2)


def _stored(refunded: int, pending: int) -> dict:
    return {"refunded_minor": refunded, "refund_pending_minor": pending}


def test_refund_columns_come_from_the_rows_and_the_saved_payment_is_left_as_it_is() -> None:
    payment = _payment()
    after = payment_after_outcome(payment, {0: _stored(0, 0), 1: _stored(300, 200)}, 5)
    assert after.version == 5 and payment.version == 2
    assert [(leg.refunded_minor, leg.refund_pending_minor) for leg in after.legs] == [
        (0, 0), (300, 200)]
    assert [(leg.refunded_minor, leg.refund_pending_minor) for leg in payment.legs] == [
        (0, 0), (0, 0)]
    after.version = 6  # what the event rows do to it
    assert payment.version == 2 and after.legs is not payment.legs
