"""Checks at the edge: every field of a request against the domain's limits.

Validators collect every violation (not just the first) so a caller can fix a
request in one round trip. Nothing is persisted until a request passes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.currencies import minor_units
from paygrid_server.domain.model.errors import FieldViolation, InvalidRequest
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import LegRequest, PaymentMode, PaymentRequest


class MoneyInput(NamedTuple):
    # A NamedTuple, not a frozen dataclass: as immutable and a third of the
    # cost to make (one is made per item of every batch).
    currency: str
    amount_minor: int
    minor_units: int | None  # what the client believes the exponent is, if it said


@dataclass(frozen=True, slots=True)
class LegInput:
    payee: str
    amount: MoneyInput | None
    channel: str
    reference: str


class PayWait(enum.Enum):
    """When Pay answers. Not part of the payment (nor of its fingerprint):
    a retry may wait differently under the same key."""

    FINAL = "FINAL"  # once the payment is final (or the caller's deadline is near)
    ACCEPTED = "ACCEPTED"  # once the payment and its legs are stored; the legs run on


@dataclass(frozen=True, slots=True)
class PayInput:
    idempotency_key: str
    payer: str
    legs: list[LegInput]
    # None: not set (the default applies); str: a value the server does not know.
    mode: PaymentMode | str | None
    metadata: dict[str, str] = field(default_factory=dict)
    # None: not set (FINAL); str: a value the server does not know.
    wait: PayWait | str | None = None

    @property
    def waits_for(self) -> PayWait:
        """The PayWait to apply; call only once validate_pay has passed."""
        return self.wait if isinstance(self.wait, PayWait) else PayWait.FINAL


# Returns why `channel` cannot take the leg, or None when it can.
ChannelCheck = Callable[[str, Money], str | None]


class Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidRequest(self.items)


def check_idempotency_key(v: Violations, path: str, key: str) -> None:
    if not key:
        v.add(path, "required: a unique key per logical request, reused on retries")
    elif len(key) > limits.IDEMPOTENCY_KEY_MAX_CHARS:
        v.add(path, f"{len(key)} characters; at most {limits.IDEMPOTENCY_KEY_MAX_CHARS}")
    elif not is_printable_ascii_without_spaces(key):
        v.add(path, "only printable ASCII without spaces is allowed")


def is_printable_ascii_without_spaces(text: str) -> bool:
    """Every character in "!".."~". Three str methods in C rather than a
    comparison per character in Python (a key is checked on every Pay)."""
    return text.isascii() and text.isprintable() and " " not in text


def check_text(v: Violations, path: str, value: str, max_chars: int, *, required: bool) -> None:
    if not value:
        if required:
            v.add(path, "required")
        return
    if len(value) > max_chars:
        v.add(path, f"{len(value)} characters; at most {max_chars}")
    elif not value.isprintable():
        v.add(path, "control characters are not allowed")


def check_money(v: Violations, path: str, money: MoneyInput | None) -> Money | None:
    if money is None:
        v.add(path, "required")
        return None
    ok = True
    exponent = minor_units(money.currency)
    if not money.currency:
        v.add(f"{path}.currency", "required: an ISO 4217 code such as USD")
        ok = False
    elif exponent is None:
        v.add(f"{path}.currency", f"{money.currency!r} is not a payable ISO 4217 currency code")
        ok = False
    elif money.minor_units is not None and money.minor_units != exponent:
        v.add(
            f"{path}.minor_units",
            f"{money.currency} has {exponent} minor-unit digits, not {money.minor_units}",
        )
        ok = False
    if money.amount_minor <= 0:
        v.add(f"{path}.amount_minor", f"must be greater than 0, got {money.amount_minor}")
        ok = False
    elif money.amount_minor > limits.MAX_AMOUNT_MINOR:
        v.add(
            f"{path}.amount_minor",
            f"{money.amount_minor} exceeds the limit of {limits.MAX_AMOUNT_MINOR} minor units",
        )
        ok = False
    return Money(money.currency, money.amount_minor) if ok else None


def check_metadata(v: Violations, path: str, metadata: dict[str, str]) -> None:
    if len(metadata) > limits.METADATA_MAX_ENTRIES:
        v.add(path, f"{len(metadata)} entries; at most {limits.METADATA_MAX_ENTRIES}")
        return
    for key, value in metadata.items():
        check_text(v, f"{path}[{key[:limits.METADATA_KEY_MAX_CHARS]!r}]", key,
                   limits.METADATA_KEY_MAX_CHARS, required=True)
        check_text(v, f"{path}[{key[:limits.METADATA_KEY_MAX_CHARS]!r}]", value,
                   limits.METADATA_VALUE_MAX_CHARS, required=False)


def validate_pay(request: PayInput, channel_check: ChannelCheck) -> PaymentRequest:
    """A PaymentRequest when every field is valid; InvalidRequest otherwise."""
    v = Violations()
    check_idempotency_key(v, "idempotency_key", request.idempotency_key)
    check_text(v, "payer", request.payer, limits.PARTY_ID_MAX_CHARS, required=True)
    if isinstance(request.mode, str):
        v.add("mode", f"unknown mode {request.mode}; use ALL_OR_NOTHING or INDEPENDENT")
    if isinstance(request.wait, str):
        v.add("wait", f"unknown wait {request.wait}; use FINAL or ACCEPTED")
    check_metadata(v, "metadata", request.metadata)

    if not request.legs:
        v.add("legs", "at least one leg is required")
    elif len(request.legs) > limits.MAX_LEGS_PER_PAYMENT:
        v.add("legs", f"{len(request.legs)} legs; at most {limits.MAX_LEGS_PER_PAYMENT}")

    legs: list[LegRequest] = []
    for i, leg in enumerate(request.legs[: limits.MAX_LEGS_PER_PAYMENT]):
        path = f"legs[{i}]"
        check_text(v, f"{path}.payee", leg.payee, limits.PARTY_ID_MAX_CHARS, required=True)
        check_text(v, f"{path}.reference", leg.reference, limits.REFERENCE_MAX_CHARS, required=False)
        check_text(v, f"{path}.channel", leg.channel, limits.CHANNEL_NAME_MAX_CHARS, required=False)
        money = check_money(v, f"{path}.amount", leg.amount)
        if money is not None:
            problem = channel_check(leg.channel, money)
            if problem:
                v.add(f"{path}.channel" if leg.channel else f"{path}.amount", problem)
            legs.append(LegRequest(leg.payee, money, leg.channel, leg.reference))

    v.raise_if_any()
    mode = request.mode if isinstance(request.mode, PaymentMode) else PaymentMode.ALL_OR_NOTHING
    return PaymentRequest(
        idempotency_key=request.idempotency_key,
        payer=request.payer,
        legs=tuple(legs),
        mode=mode,
        metadata=dict(request.metadata),
    )
