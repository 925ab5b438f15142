"""The simulator's test values: what a payee id makes a channel do, like
Stripe's test cards (documented in docs/operations/simulator.md):
  decline_<code>        DECLINED with decline code <code>
  timeout_<anything>    Charge never answers and charges nothing
  hang_after_charge_<x> Charge is recorded, then the answer never comes
  flaky_<anything>      first Charge per key fails UNAVAILABLE, retries succeed
  reversal_fails_once_<x>  charged normally; the first Void or Refund of that
                        charge fails UNAVAILABLE before doing anything
Kept apart from the servicer (channel_simulator.py), which decides what a
call does with them (one Charge, or a bulk ChargeBatch as a whole).
"""

from __future__ import annotations

REVERSAL_FAILS_ONCE_PREFIX = "reversal_fails_once_"
_TIMEOUT_PREFIX = "timeout_"
_HANG_AFTER_CHARGE_PREFIX = "hang_after_charge_"
_FLAKY_PREFIX = "flaky_"
# The values that make a Charge wait or fail (the rest capture or decline).
_WAITING_OR_FAILING_PREFIXES = (_TIMEOUT_PREFIX, _HANG_AFTER_CHARGE_PREFIX, _FLAKY_PREFIX)


def answers_at_once(payee: str) -> bool:
    """No test value makes a Charge to this payee hang or fail (it is
    captured, or declined by decline_)."""
    return not payee.startswith(_WAITING_OR_FAILING_PREFIXES)


def never_answers(payee: str) -> bool:
    return payee.startswith(_TIMEOUT_PREFIX)


def hangs_after_charge(payee: str) -> bool:
    return payee.startswith(_HANG_AFTER_CHARGE_PREFIX)


def decline_code(payee: str) -> str:
    """The decline code a decline_ payee asks for; "" for a capture."""
    if payee.startswith("decline_"):
        return payee.removeprefix("decline_") or "generic_decline"
    return ""


class OnceOnlyFailures:
    """The test values that fail only the first time: remembers which keys
    and charges have failed already (for the servicer's life)."""

    def __init__(self) -> None:
        self._flaky_failed: set[str] = set()
        self._reversal_failed: set[str] = set()

    def fails_flaky(self, payee: str, idempotency_key: str) -> bool:
        """True the first time a flaky_ payee's key is seen."""
        if payee.startswith(_FLAKY_PREFIX) and idempotency_key not in self._flaky_failed:
            self._flaky_failed.add(idempotency_key)
            return True
        return False

    def fails_reversal_once(self, charge_key: str, payee: str | None) -> bool:
        """True for the first Void or Refund of a reversal_fails_once_
        charge (`payee`: the charge's, None if there is no such charge)."""
        if payee is not None and payee.startswith(REVERSAL_FAILS_ONCE_PREFIX) and \
                charge_key not in self._reversal_failed:
            self._reversal_failed.add(charge_key)
            return True
        return False
