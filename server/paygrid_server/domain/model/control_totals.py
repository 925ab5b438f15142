"""Control totals of a batch, as ISO 20022 pain.001 declares them (NbOfTxs,
CtrlSum): what the client says it sent, checked against what arrived before
any money moves. They catch a truncated, duplicated or altered file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import TYPE_CHECKING

from paygrid_server.domain.model.currencies import minor_units
from paygrid_server.domain.model.request_validation import MoneyInput

if TYPE_CHECKING:
    from paygrid_server.domain.model.transaction_columns import TransactionColumns

# pain.001 DecimalNumber: totalDigits 18, fractionDigits 17, no sign.
CONTROL_SUM_MAX_DIGITS = 18
CONTROL_SUM_MAX_FRACTION_DIGITS = 17
_PLAIN_DECIMAL = re.compile(r"(\d+)(?:\.(\d+))?")
# Sums are exact: 5,000,000 int64 amounts at up to 18 decimals need about
# 44 digits; the default context (28) would round them.
_EXACT = Context(prec=64)


@dataclass(frozen=True, slots=True)
class ControlTotals:
    item_count: int | None  # None: not declared
    amount_sum: Decimal | None  # major units, whatever the currency; None: not declared


def parse_control_sum(text: str) -> Decimal | str:
    """The declared sum, or why it is not a pain.001 DecimalNumber."""
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        return f"{text[:40]!r} is not a plain decimal like 1250.50 (digits, one optional point)"
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > CONTROL_SUM_MAX_FRACTION_DIGITS:
        return f"{len(fraction)} digits after the point; at most {CONTROL_SUM_MAX_FRACTION_DIGITS}"
    if len(whole.lstrip("0")) + len(fraction) > CONTROL_SUM_MAX_DIGITS:
        return f"more than {CONTROL_SUM_MAX_DIGITS} digits"
    return Decimal(text)


def major_units(amount: MoneyInput) -> Decimal:
    """An amount as sent, in major units. The client's own exponent wins,
    as it does for the file the totals came from; an unknown currency
    without one counts as its minor units (such an item is rejected anyway)."""
    exponent = amount.minor_units if amount.minor_units is not None else (
        minor_units(amount.currency) or 0)
    # minor_units is any uint32 as sent: past Decimal's exponent range scaleb
    # raises InvalidOperation (the run failed, INTERNAL). No sum can show more
    # digits than CONTROL_SUM_MAX_FRACTION_DIGITS, and such an item is
    # rejected anyway (wrong minor units).
    exponent = min(exponent, CONTROL_SUM_MAX_FRACTION_DIGITS + 1)
    return Decimal(amount.amount_minor).scaleb(-exponent, _EXACT)


class ControlTally:
    """What a stream carried, to hold against its declared totals. Amounts
    are summed as integers per exponent and made one Decimal when asked:
    exact either way, and no Decimal arithmetic per item."""

    def __init__(self) -> None:
        self.item_count = 0
        self._minor_sums: dict[int, int] = {}  # by exponent, as major_units takes it

    def add(self, amount: MoneyInput | None) -> None:
        self.item_count += 1
        if amount is not None:
            exponent = amount.minor_units if amount.minor_units is not None else (
                minor_units(amount.currency) or 0)
            exponent = min(exponent, CONTROL_SUM_MAX_FRACTION_DIGITS + 1)
            self._minor_sums[exponent] = self._minor_sums.get(exponent, 0) + amount.amount_minor

    def add_columns(self, columns: TransactionColumns) -> None:
        """add() for each of a message's transactions."""
        if columns.unusual:  # some carry their own exponent (or no amount): one by one
            for index in range(len(columns)):
                self.add(columns.input(index).amount)
            return
        self.item_count += len(columns)
        by_currency: dict[str, int] = {}
        for currency, amount_minor in zip(columns.currencies, columns.amounts_minor):
            by_currency[currency] = by_currency.get(currency, 0) + amount_minor
        for currency, minor_sum in by_currency.items():
            exponent = min(minor_units(currency) or 0, CONTROL_SUM_MAX_FRACTION_DIGITS + 1)
            self._minor_sums[exponent] = self._minor_sums.get(exponent, 0) + minor_sum

    @property
    def amount_sum(self) -> Decimal:
        total = Decimal(0)
        for exponent, minor_sum in self._minor_sums.items():
            total = _EXACT.add(total, Decimal(minor_sum).scaleb(-exponent, _EXACT))
        return total

    def mismatches(self, declared: ControlTotals) -> list[str]:
        found = []
        if declared.item_count is not None and declared.item_count != self.item_count:
            found.append(f"declared {declared.item_count} transactions, received "
                         f"{self.item_count}")
        amount_sum = self.amount_sum
        if declared.amount_sum is not None and declared.amount_sum != amount_sum:
            found.append(f"declared a control sum of {declared.amount_sum}, received "
                         f"{amount_sum}")
        return found
