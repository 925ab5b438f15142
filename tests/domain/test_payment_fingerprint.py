"""A payment request's fingerprint, written out by hand for speed, is the
generic fingerprint() of its body: digests stored by earlier versions must
still match a replay."""

from __future__ import annotations

import itertools

from paygrid_server.domain.model.fingerprint import fingerprint
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import LegRequest, PaymentMode, PaymentRequest

AWKWARD = ("Zoë", 'quote " and \\ backslash', "tab\tnew\nline\x00\x1f\x7f", "€ 😀 \u2028", "", "a")


def generic(request: PaymentRequest) -> str:
    """How the fingerprint was taken before: json.dumps of the body."""
    return fingerprint({
        "payer": request.payer,
        "mode": request.mode.value,
        "metadata": request.metadata,
        "legs": [[leg.payee, leg.amount.currency, leg.amount.amount_minor, leg.channel,
                  leg.reference] for leg in request.legs],
    })


def test_the_payment_fingerprint_is_the_fingerprint_of_its_body() -> None:
    metadatas = ({}, {"b": "2", "a": "1"}, {"Zoë": '"', "z": "\\", "\x00": "😀", "": ""},
                 {f"k{i}": str(i) for i in range(32, 0, -1)})
    for text, mode, metadata, count in itertools.product(
            AWKWARD, PaymentMode, metadatas, (1, 2, 16)):
        legs = tuple(LegRequest(f"{text}{i}", Money("EUR", 10**15 - i), text, text[::-1])
                     for i in range(count))
        request = PaymentRequest(idempotency_key="k", payer=text, legs=legs, mode=mode,
                                 metadata=metadata)
        assert request.fingerprint() == generic(request), (text, mode, metadata, count)


def test_what_the_fingerprint_tells_apart() -> None:
    def request(**changes) -> PaymentRequest:
        fields = {"idempotency_key": "k", "payer": "p", "mode": PaymentMode.ALL_OR_NOTHING,
                  "metadata": {"a": "1"}, "legs": (LegRequest("x", Money("EUR", 1), "", ""),
                                                   LegRequest("y", Money("EUR", 2), "", ""))}
        return PaymentRequest(**{**fields, **changes})
    base = request().fingerprint()
    assert request(idempotency_key="other").fingerprint() == base  # the key is not in it
    assert request(metadata={"a": "1"}).fingerprint() == base
    for changed in (request(payer="q"), request(mode=PaymentMode.INDEPENDENT),
                    request(metadata={"a": "2"}), request(metadata={}),
                    request(legs=tuple(reversed(request().legs))),
                    request(legs=(LegRequest("x", Money("EUR", 1), "", ""),))):
        assert changed.fingerprint() != base
