"""Parsers for the CLI's argument values: legs, refund legs, metadata,
numbers and named choices. Each raises argparse.ArgumentTypeError with an
example of what it expects, so argparse exits 2 before any call is made."""

from __future__ import annotations

import argparse
import re
from typing import Callable

from paygrid_client.request_messages import Leg, RefundLeg

MINOR_UNITS_PATTERN = re.compile(r"-?[0-9]+")


def amount_minor(text: str) -> int:
    if not MINOR_UNITS_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"amount {text!r}: an integer of minor units (cents), e.g. 1250 for 12.50")
    return int(text)


def pay_leg(text: str) -> Leg:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"leg {text!r}: expected payee:CURRENCY:amount_minor[:channel], "
            "e.g. hotel_4711:EUR:45000:card")
    return Leg(payee=parts[0], currency=parts[1], amount_minor=amount_minor(parts[2]),
               channel=parts[3] if len(parts) == 4 else "")


def refund_leg(text: str) -> RefundLeg:
    parts = text.split(":")
    if len(parts) not in (1, 3) or not parts[0].isdigit():
        raise argparse.ArgumentTypeError(
            f"leg {text!r}: expected leg_index[:CURRENCY:amount_minor], e.g. 0:EUR:5000 "
            "(the index alone refunds what remains of that leg)")
    if len(parts) == 1:
        return RefundLeg(leg_index=int(parts[0]))
    return RefundLeg(leg_index=int(parts[0]), currency=parts[1],
                     amount_minor=amount_minor(parts[2]))


def metadata_entry(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"metadata {text!r}: expected KEY=VALUE")
    return key, value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be greater than 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def choice_of(choices: dict[str, int], what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        name = text.lower().replace("_", "-")
        for known, value in choices.items():
            if name in (known, known.replace("-", "")):
                return value
        raise argparse.ArgumentTypeError(
            f"{what} {text!r}: one of {', '.join(choices)}")
    return parse
