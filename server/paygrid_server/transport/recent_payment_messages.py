"""The paygrid.v1.Payment message of each payment's latest event snapshot,
kept while the payment is unfinished, so that its next snapshot refreshes
that message (refresh_payment_pb) instead of building one anew.

Why: a Pay writes two snapshots, payment.created and its outcome's, both
inside the SQLite writer's turn (the one thread every write of the process
waits for, and with `--workers` the file's write lock every worker waits
for). The outcome's differs only in what the payment's life changes;
refreshing the created snapshot's message is half the cost of a new one.

Bounded: a payment whose outcome is never encoded here (finished by another
worker or replica, its write failed) is forgotten, the oldest first, once
MAX_MESSAGES are kept; a payment not found is built anew, as before. Used by
one thread at a time per encoder (the SQLite writer's; PostgreSQL's event
loop) and every call is synchronous: nothing else touches a message between
taking it and putting it back.
"""

from __future__ import annotations

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model.payment import Payment, PaymentStatus
from paygrid_server.transport.payment_messages import payment_pb, refresh_payment_pb

# In flight at once: Pays waiting (max_concurrent_calls) and accepted ones
# still charging. A message is a few hundred bytes.
MAX_MESSAGES = 4096


class RecentPaymentMessages:
    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self._max = max_messages
        self._messages: dict[str, pb.Payment] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._messages)

    def message(self, payment: Payment) -> pb.Payment:
        """payment_pb(payment), the same bytes. Kept for the payment's next
        snapshot while it is PROCESSING (a final payment has no payment
        snapshot after its outcome's: refunds carry their own)."""
        message = self._messages.pop(payment.payment_id, None)
        if message is None or len(message.legs) != len(payment.legs):
            message = payment_pb(payment)
        else:
            refresh_payment_pb(message, payment)
        if payment.status is PaymentStatus.PROCESSING:
            if len(self._messages) >= self._max:
                del self._messages[next(iter(self._messages))]
            self._messages[payment.payment_id] = message
        return message
