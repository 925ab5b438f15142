"""Which channels may take a leg, in which order.

A leg that names a channel goes there only. A routed leg goes to every
channel that accepts its currency and amount, healthiest and cheapest first;
the dispatcher fails over down that list.
"""

from __future__ import annotations

from dataclasses import dataclass

from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.circuit_breaker import BreakerState, CircuitBreaker
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import LegRequest


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    name: str
    currencies: frozenset[str]  # empty: every currency
    min_amount_minor: int = 1
    max_amount_minor: int = limits.MAX_AMOUNT_MINOR
    priority: int = 100  # lower is tried first
    timeout_ms: int = 2_000  # per Charge call

    def accepts(self, money: Money) -> str | None:
        if self.currencies and money.currency not in self.currencies:
            return f"channel {self.name!r} does not accept {money.currency}"
        if not self.min_amount_minor <= money.amount_minor <= self.max_amount_minor:
            return (
                f"channel {self.name!r} accepts {self.min_amount_minor} to "
                f"{self.max_amount_minor} minor units, not {money.amount_minor}"
            )
        return None


class Router:
    def __init__(self, routes: list[ChannelRoute], breakers: dict[str, CircuitBreaker]) -> None:
        assert routes, "at least one channel is configured"
        assert len({r.name for r in routes}) == len(routes), "channel names are unique"
        self._routes = {r.name: r for r in routes}
        self._breakers = breakers

    def route(self, name: str) -> ChannelRoute:
        return self._routes[name]

    def breaker(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def check(self, channel: str, money: Money) -> str | None:
        """Why a leg with this channel and amount cannot be routed, or None."""
        if channel:
            route = self._routes.get(channel)
            if route is None:
                return f"unknown channel {channel!r}; known: {', '.join(sorted(self._routes))}"
            return route.accepts(money)
        for route in self._routes.values():
            if route.accepts(money) is None:
                return None
        return f"no channel accepts {money.amount_minor} minor units of {money.currency}"

    def candidates(self, leg: LegRequest) -> list[ChannelRoute]:
        if leg.channel:
            return [self._routes[leg.channel]]
        eligible = self._eligible(leg.amount)
        # Open breakers sink to the end rather than vanish: when every channel
        # is unhealthy the leg still fails with the breaker as its reason.
        eligible.sort(key=lambda r: (self._breakers[r.name].state is BreakerState.OPEN, r.priority))
        return eligible[: limits.MAX_CHANNELS_PER_LEG]

    def first_choice(self, channel: str, money: Money) -> str:
        """candidates(...)[0].name for a leg `check` passed, without a
        LegRequest or a sorted list: taken for every item of every batch."""
        if channel:
            return channel
        if len(self._routes) == 1:  # `check` passed: the only channel accepts it
            return next(iter(self._routes))
        eligible = self._eligible(money)
        if len(eligible) == 1:
            return eligible[0].name
        # min keeps the first of equals, as the stable sort in candidates does.
        return min(eligible, key=lambda r: (
            self._breakers[r.name].state is BreakerState.OPEN, r.priority)).name

    def sole_choice(self, channel: str, currency: str, low: int, high: int) -> str | None:
        """The first_choice of every amount from `low` to `high` minor units
        of `currency` sent to `channel` ("": routed), when `check` passes
        each of them: one question for a message of batch items instead of
        two per item. None when the answer may differ by amount (then ask
        per amount)."""
        if channel:
            route = self._routes.get(channel)
        elif len(self._routes) == 1:
            route = next(iter(self._routes.values()))
        else:
            return None  # which channels are eligible, and in what order, may vary
        # A route takes a currency and a range of amounts: both ends taken,
        # every amount between them is.
        if route is None or route.accepts(Money(currency, low)) is not None \
                or route.accepts(Money(currency, high)) is not None:
            return None
        return route.name

    def _eligible(self, money: Money) -> list[ChannelRoute]:
        return [r for r in self._routes.values() if r.accepts(money) is None]
