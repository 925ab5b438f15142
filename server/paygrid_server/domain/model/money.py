"""Money as integer minor units plus an ISO 4217 code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Money:
    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        assert isinstance(self.amount_minor, int) and not isinstance(self.amount_minor, bool), (
            "money is integer minor units, never float"
        )

    def __str__(self) -> str:
        return f"{self.amount_minor} {self.currency} (minor units)"
