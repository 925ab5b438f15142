"""Which channels may take a leg, in which order: currency and amount limits
at and past their bounds, priority, open breakers last, at most
MAX_CHANNELS_PER_LEG. The end-to-end routing is in test_pay.py."""

from __future__ import annotations

import pytest

from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import LegRequest
from paygrid_server.domain.charging.routing import ChannelRoute, Router


def route(name: str, *currencies: str, **changes) -> ChannelRoute:
    return ChannelRoute(name, frozenset(currencies), **changes)


def router(*routes: ChannelRoute) -> Router:
    return Router(list(routes), {r.name: CircuitBreaker(failure_threshold=1) for r in routes})


def leg(amount: int = 1_000, currency: str = "USD", channel: str = "") -> LegRequest:
    return LegRequest("m1", Money(currency, amount), channel, "")


def test_a_route_has_the_documented_defaults() -> None:
    plain = ChannelRoute("card", frozenset())
    assert (plain.min_amount_minor, plain.max_amount_minor, plain.priority, plain.timeout_ms) == (
        1, limits.MAX_AMOUNT_MINOR, 100, 2_000)


def test_a_route_takes_its_currencies_or_any_when_it_names_none() -> None:
    card = route("card", "USD", "EUR")
    assert card.accepts(Money("EUR", 5)) is None
    assert card.accepts(Money("JPY", 5)) == "channel 'card' does not accept JPY"
    assert route("any").accepts(Money("JPY", 5)) is None


@pytest.mark.parametrize("amount, ok", [(10, True), (9, False), (500, True), (501, False)])
def test_a_route_takes_amounts_from_its_minimum_to_its_maximum(amount, ok) -> None:
    wallet = route("wallet", min_amount_minor=10, max_amount_minor=500)
    expected = None if ok else f"channel 'wallet' accepts 10 to 500 minor units, not {amount}"
    assert wallet.accepts(Money("USD", amount)) == expected


def test_check_names_what_cannot_be_routed() -> None:
    r = router(route("card", "USD"), route("bank", "EUR", max_amount_minor=100))
    assert r.check("card", Money("USD", 5)) is None
    assert r.check("nope", Money("USD", 5)) == "unknown channel 'nope'; known: bank, card"
    assert r.check("card", Money("EUR", 5)) == "channel 'card' does not accept EUR"
    assert r.check("", Money("EUR", 100)) is None
    assert r.check("", Money("EUR", 101)) == "no channel accepts 101 minor units of EUR"
    assert r.check("", Money("JPY", 1)) == "no channel accepts 1 minor units of JPY"


def test_routed_legs_go_to_eligible_channels_cheapest_first() -> None:
    r = router(route("bank", priority=30), route("card", "USD", priority=10),
               route("wallet", "USD", priority=20, max_amount_minor=100))
    assert [c.name for c in r.candidates(leg(100))] == ["card", "wallet", "bank"]
    assert [c.name for c in r.candidates(leg(101))] == ["card", "bank"]
    assert [c.name for c in r.candidates(leg(5, "EUR"))] == ["bank"]


def test_a_named_channel_is_the_only_candidate() -> None:
    r = router(route("card", priority=10), route("bank", priority=30))
    assert [c.name for c in r.candidates(leg(channel="bank"))] == ["bank"]
    assert r.route("bank").priority == 30
    assert r.breaker("card") is not r.breaker("bank")


def test_open_breakers_sink_to_the_end_but_stay() -> None:
    r = router(route("card", priority=10), route("wallet", priority=20), route("bank", priority=30))
    r.breaker("card").record_failure()  # threshold 1: open
    assert [c.name for c in r.candidates(leg())] == ["wallet", "bank", "card"]
    r.breaker("wallet").record_failure()
    assert [c.name for c in r.candidates(leg())] == ["bank", "card", "wallet"]


def test_a_half_open_breaker_keeps_its_place() -> None:
    now = {"ms": 0.0}
    card = route("card", priority=10)
    breakers = {"card": CircuitBreaker(1, 1_000, lambda: now["ms"]),
                "bank": CircuitBreaker(1, 1_000, lambda: now["ms"])}
    r = Router([card, route("bank", priority=30)], breakers)
    breakers["card"].record_failure()
    assert [c.name for c in r.candidates(leg())] == ["bank", "card"]
    now["ms"] = 1_000  # half open: its probe may go first again
    assert [c.name for c in r.candidates(leg())] == ["card", "bank"]


def test_a_leg_tries_at_most_three_channels() -> None:
    assert limits.MAX_CHANNELS_PER_LEG == 3
    four = router(*(route(f"c{i}", priority=i) for i in range(4)))
    assert [c.name for c in four.candidates(leg())] == ["c0", "c1", "c2"]
    three = router(*(route(f"c{i}", priority=i) for i in range(3)))
    assert [c.name for c in three.candidates(leg())] == ["c0", "c1", "c2"]
