"""paygrid_client: typed Python clients (async and sync) for paygrid.v1.

    from paygrid_client import AsyncPaygridClient, Leg

    async with AsyncPaygridClient("127.0.0.1:50051") as client:
        payment = await client.pay("acct_000012345678",
                                   [Leg("hotel_4711", "EUR", 45_000)])

Results are the generated messages (paygrid.v1.payment_service_pb2.Payment,
...). A failed call raises PaygridError after bounded retries.
"""

from paygrid_client.async_client import AsyncPaygridClient
from paygrid_client.batch_files import BatchFile, BatchFileError
from paygrid_client.connection import API_KEY_ENV, DEFAULT_TARGET, DEV_API_KEY
from paygrid_client.errors import FieldViolation, PaygridError, PreconditionViolation
from paygrid_client.request_messages import Leg, RefundLeg, money, new_idempotency_key
from paygrid_client.retries import NO_RETRIES, RetryEvent, RetryPolicy
from paygrid_client.sync_client import PaygridClient
from paygrid_client.timeouts import CallTimeouts

__all__ = [
    "API_KEY_ENV", "DEFAULT_TARGET", "DEV_API_KEY", "NO_RETRIES",
    "AsyncPaygridClient", "BatchFile", "BatchFileError", "CallTimeouts", "FieldViolation",
    "Leg", "PaygridClient", "PaygridError", "PreconditionViolation", "RefundLeg",
    "RetryEvent", "RetryPolicy", "money", "new_idempotency_key",
]
