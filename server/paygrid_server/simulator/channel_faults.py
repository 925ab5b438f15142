"""Faults switched on and off while a simulator runs, without restarting it.

Tests and scripts/reliability_faults reach a running channel through its
servicer (`simulator.faults`) and make it misbehave for a while:

  slow_down(extra_ms, calls=N | for_s=S)  latency spike on Charge/ChargeBatch
  fail_charges(calls=N)                   the next N charge calls fail UNAVAILABLE
                                          before anything is charged (an error burst)
  hold_charges(after_calls=N)             after N more calls pass, charge calls
  / release_charges()                     hang, charging nothing, until released
  await wait_held(calls=N)                until N calls in all have been held: a
                                          test knows a caller is mid-charge
  fail_reversals(calls=N)                 the next N Void/Refund calls fail
                                          UNAVAILABLE before anything is done
  clear()                                 all of it off

A spiked or held charge call is processed to its end even when the caller
gives up meanwhile: the channel has the request, as a real one would. Its
charge therefore lands late, after paygrid may have fenced the key (the
fence must refuse it). The base latency and the random failure rate live in
`simulator.behaviour`, which may be replaced at run time as well.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChargeFault:
    """What the faults do to one charge call."""

    fail: bool = False
    extra_latency_ms: float = 0.0
    release: asyncio.Event | None = None  # held until set

    @property
    def delays(self) -> bool:
        return bool(self.extra_latency_ms) or self.release is not None

    async def wait(self) -> None:
        if self.extra_latency_ms:
            await asyncio.sleep(self.extra_latency_ms / 1_000)
        if self.release is not None:
            await self.release.wait()


class ChannelFaults:
    def __init__(self) -> None:
        self._extra_latency_ms = 0.0
        self._slow_calls_left: int | None = None  # None: no count limit
        self._slow_until_s: float | None = None  # time.monotonic(); None: no time limit
        self._failing_charges = 0
        self._failing_reversals = 0
        self._release: asyncio.Event | None = None
        self._calls_before_hold = 0  # of hold_charges(after_calls=N): still to pass
        # Set (and replaced) whenever a call is held, so a test waits for the
        # hold itself rather than polling for a moment that may pass by.
        self._a_call_held = asyncio.Event()
        # Calls each fault acted on, so tests can see the fault really bit.
        self.charges_failed = 0
        self.charges_slowed = 0
        self.charges_held = 0
        self.reversals_failed = 0

    def slow_down(self, extra_ms: float, calls: int | None = None,
                  for_s: float | None = None) -> None:
        """Adds `extra_ms` to the next `calls` charge calls, or to those
        arriving in the next `for_s` seconds, or (neither) until cleared."""
        assert extra_ms > 0 and (calls is None or calls > 0) and (for_s is None or for_s > 0)
        self._extra_latency_ms = extra_ms
        self._slow_calls_left = calls
        self._slow_until_s = None if for_s is None else time.monotonic() + for_s

    def fail_charges(self, calls: int) -> None:
        assert calls >= 0
        self._failing_charges = calls

    def hold_charges(self, after_calls: int = 0) -> None:
        """Holds charge calls until released; the next `after_calls` calls
        still pass, so a caller provably finished some and holds the rest."""
        assert after_calls >= 0
        self._calls_before_hold = after_calls
        if self._release is None:
            self._release = asyncio.Event()

    async def wait_held(self, calls: int = 1) -> None:
        """Returns once `calls` charge calls in all (charges_held) were held."""
        while self.charges_held < calls:
            await self._a_call_held.wait()

    def release_charges(self) -> None:
        """Held calls go on (and charge, unless their key was fenced meanwhile)."""
        if self._release is not None:
            self._release.set()
            self._release = None
        self._calls_before_hold = 0

    def fail_reversals(self, calls: int) -> None:
        assert calls >= 0
        self._failing_reversals = calls

    def clear(self) -> None:
        self._extra_latency_ms = 0.0
        self._slow_calls_left = self._slow_until_s = None
        self._failing_charges = self._failing_reversals = 0
        self.release_charges()

    def take_charge_fault(self) -> ChargeFault:
        """The fault for the charge call arriving now (counts are used up)."""
        if self._failing_charges:
            self._failing_charges -= 1
            self.charges_failed += 1
            return ChargeFault(fail=True)
        extra_ms = self._take_latency_ms()
        if extra_ms:
            self.charges_slowed += 1
        if self._release is None:
            return ChargeFault(extra_latency_ms=extra_ms)
        if self._calls_before_hold:
            self._calls_before_hold -= 1
            return ChargeFault(extra_latency_ms=extra_ms)
        self.charges_held += 1
        self._a_call_held.set()
        self._a_call_held = asyncio.Event()
        return ChargeFault(extra_latency_ms=extra_ms, release=self._release)

    def _take_latency_ms(self) -> float:
        if not self._extra_latency_ms:
            return 0.0
        if self._slow_until_s is not None and time.monotonic() >= self._slow_until_s:
            self._extra_latency_ms = 0.0
            return 0.0
        extra_ms = self._extra_latency_ms
        if self._slow_calls_left is not None:
            self._slow_calls_left -= 1
            if self._slow_calls_left == 0:
                self._extra_latency_ms = 0.0
        return extra_ms

    def take_reversal_failure(self) -> bool:
        if not self._failing_reversals:
            return False
        self._failing_reversals -= 1
        self.reversals_failed += 1
        return True
