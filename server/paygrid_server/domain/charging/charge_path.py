"""What every charge goes through, as one object: the router (which channel,
its circuit breaker), the channels themselves, and settlement (what to do
with a charge that must not stand). Payments, batch runs and group workers
all need the three together; passed as one, they cannot be mismatched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from paygrid_server.domain.charging.routing import Router
from paygrid_server.domain.charging.settlement import ChargeSettlement
from paygrid_server.domain.ports.payment_channel import PaymentChannel


@dataclass(frozen=True, slots=True)
class ChargePath:
    router: Router
    channels: Mapping[str, PaymentChannel]
    settlement: ChargeSettlement
