"""Faults switched on and off while a simulator runs, without restarting it.

Tests and scripts/reliability_faults reach a running channel through its
servicer (`simulator.faults`) and make it misbehave for a while:

  slow_down(extra_ms, calls=N | for_s=S)  latency spike on Charge/ChargeBatch
  fail_charges(calls=N)                   the next N charge calls fail UNAVAILABLE
                                          before anything is charged (an error burst)
  hold_charges(after_calls=N)             after N more calls pass, charge calls
  / release_charges()                     hang, charging nothing, until released
                                          (drop=True: they end
                                          then without charging, as requests
                                          lost with their connection)
  await held(calls=N)                     returns once N charge calls are held
  freeze() / thaw()                       every call (charges, lookups, voids,
                                          refunds) hangs, doing nothing, until
                                          thawed: a channel that is down
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
    hold: "ChargeHold | None" = None  # held until released

    @property
    def delays(self) -> bool:
        return bool(self.extra_latency_ms) or self.hold is not None

    async def wait(self) -> bool:
        """False when the held call is to end without charging."""
        if self.extra_latency_ms:
            await asyncio.sleep(self.extra_latency_ms / 1_000)
        if self.hold is not None:
            await self.hold.released.wait()
            return not self.hold.dropped
        return True


class ChargeDropped(Exception):
    """A held call released with drop=True: nothing was charged."""


@dataclass(slots=True)
class ChargeHold:
    """One hold_charges() period: the calls it holds wait for `released`."""

    released: asyncio.Event
    dropped: bool = False


class ChannelFaults:
    def __init__(self) -> None:
        self._extra_latency_ms = 0.0
        self._slow_calls_left: int | None = None  # None: no count limit
        self._slow_until_s: float | None = None  # time.monotonic(); None: no time limit
        self._failing_charges = 0
        self._failing_reversals = 0
        self._hold: ChargeHold | None = None
        self._calls_before_hold = 0  # of hold_charges(after_calls=N): still to pass
        # Calls each fault acted on, so tests can see the fault really bit.
        self.charges_failed = 0
        self.charges_slowed = 0
        self.charges_held = 0
        self._held_more = asyncio.Event()  # set each time a call is held
        self._thawed: asyncio.Event | None = None  # frozen while set to an Event
        self.calls_frozen = 0
        self._frozen_more = asyncio.Event()  # set each time a call is frozen
        self.reversals_failed = 0

    @property
    def at_rest(self) -> bool:
        """No fault is switched on: a call now would pass untouched."""
        return (self._thawed is None and self._hold is None and not self._failing_charges
                and not self._extra_latency_ms)

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
        if self._hold is None:
            self._hold = ChargeHold(asyncio.Event())

    def release_charges(self, drop: bool = False) -> None:
        """Held calls go on (and charge, unless their key was fenced
        meanwhile); with `drop`, they end without charging anything."""
        if self._hold is not None:
            self._hold.dropped = drop
            self._hold.released.set()
            self._hold = None
        self._calls_before_hold = 0

    async def held(self, calls: int) -> None:
        """Returns once `calls` charge calls in all have been held: a test
        makes its moment (the calls are at the channel) happen, not wait for it."""
        while self.charges_held < calls:
            self._held_more.clear()
            await self._held_more.wait()

    def freeze(self) -> None:
        if self._thawed is None:
            self._thawed = asyncio.Event()

    def thaw(self) -> None:
        if self._thawed is not None:
            self._thawed.set()
            self._thawed = None

    async def frozen(self, calls: int) -> None:
        """Returns once `calls` calls of any kind in all have been frozen
        (as held() does for held charges)."""
        while self.calls_frozen < calls:
            self._frozen_more.clear()
            await self._frozen_more.wait()

    async def until_thawed(self) -> None:
        """Every call waits here first: at once, unless the channel is frozen."""
        if self._thawed is not None:
            self.calls_frozen += 1
            self._frozen_more.set()
            await self._thawed.wait()

    def fail_reversals(self, calls: int) -> None:
        assert calls >= 0
        self._failing_reversals = calls

    def clear(self) -> None:
        self._extra_latency_ms = 0.0
        self._slow_calls_left = self._slow_until_s = None
        self._failing_charges = self._failing_reversals = 0
        self.release_charges()
        self.thaw()

    def take_charge_fault(self) -> ChargeFault:
        """The fault for the charge call arriving now (counts are used up)."""
        if self._failing_charges:
            self._failing_charges -= 1
            self.charges_failed += 1
            return ChargeFault(fail=True)
        extra_ms = self._take_latency_ms()
        if extra_ms:
            self.charges_slowed += 1
        if self._hold is None:
            return ChargeFault(extra_latency_ms=extra_ms)
        if self._calls_before_hold:
            self._calls_before_hold -= 1
            return ChargeFault(extra_latency_ms=extra_ms)
        self.charges_held += 1
        self._held_more.set()
        return ChargeFault(extra_latency_ms=extra_ms, hold=self._hold)

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
