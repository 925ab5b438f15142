"""The interfaces the domain needs (stores, group queue, payment channel), owned by the
domain: storage/ and channels/ implement them, nothing here imports back up."""

from __future__ import annotations

from paygrid_server.domain.ports.batch_store import (
    IngestOutcome,
    BatchStore,
)
from paygrid_server.domain.ports.bulk_charges import ChargeOrders, ChargeRecords
from paygrid_server.domain.ports.group_queue import (
    GroupLease,
    DoneGroup,
    GroupQueue,
)
from paygrid_server.domain.ports.payment_channel import (
    ChargeStatus,
    ChargeRecord,
    ChargeOrderLike,
    ChannelCallError,
    ChannelUnavailable,
    ChannelUnreachable,
    ChannelTimeout,
    ChargeNotFound,
    ChannelRefused,
    BulkChargeUnsupported,
    PaymentChannel,
)
from paygrid_server.domain.ports.payment_store import (
    PageCursor,
    RefundExceedsRefundable,
    PaymentStore,
)
from paygrid_server.domain.ports.sibling_payments import SiblingPayments
from paygrid_server.domain.ports.storage_errors import (
    StorageFault,
    StorageUnavailable,
)

__all__ = [
    "BatchStore",
    "BulkChargeUnsupported",
    "ChannelCallError",
    "ChannelRefused",
    "ChannelTimeout",
    "ChannelUnavailable",
    "ChannelUnreachable",
    "ChargeNotFound",
    "ChargeOrderLike",
    "ChargeOrders",
    "ChargeRecord",
    "ChargeRecords",
    "ChargeStatus",
    "DoneGroup",
    "GroupLease",
    "GroupQueue",
    "IngestOutcome",
    "PageCursor",
    "PaymentChannel",
    "PaymentStore",
    "RefundExceedsRefundable",
    "SiblingPayments",
    "StorageFault",
    "StorageUnavailable",
]
