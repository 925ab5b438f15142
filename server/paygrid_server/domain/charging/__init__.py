"""One leg or one group charged on one channel: routing, circuit breakers, the charge
call with its retries, and settlement (void or refund) of what must not stand."""

from __future__ import annotations

from paygrid_server.domain.charging.channel_charge import (
    ChargeOrder,
    NoOutcome,
    call_with_retries,
    charge_with_retries,
    decline_reason,
    charge_failure,
    charge_and_settle,
)
from paygrid_server.domain.charging.charge_path import (
    ChargePath,
)
from paygrid_server.domain.charging.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
)
from paygrid_server.domain.charging.retries import (
    retry_settlement_call,
)
from paygrid_server.domain.charging.routing import (
    ChannelRoute,
    Router,
)
from paygrid_server.domain.charging.settlement import (
    Reversal,
    ChargeSettlement,
)

__all__ = [
    "BreakerState",
    "ChannelRoute",
    "ChargeOrder",
    "ChargePath",
    "ChargeSettlement",
    "CircuitBreaker",
    "NoOutcome",
    "Reversal",
    "Router",
    "call_with_retries",
    "charge_and_settle",
    "charge_failure",
    "charge_with_retries",
    "decline_reason",
    "retry_settlement_call",
]
