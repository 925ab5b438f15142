"""A pain.001 payment information block (PmtInf) as a paygrid batch: its id,
payer, control totals and transactions in integer minor units."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.currencies import minor_units
from paygrid_client.iso20022_pain001 import CreditTransferInitiation, PaymentInformation

BATCH_ID_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class Pain001Batch:
    block: PaymentInformation
    batch_id: str
    payer: str
    control_item_count: int
    control_sum: str  # as the file declares it, or the sum of the block's amounts


def batch_id_for(message_id: str, block_id: str) -> str:
    """MsgId/PmtInfId when that is a valid batch id, else a digest of both:
    the same file always maps to the same batches, so importing it again
    resumes them instead of paying again."""
    plain = f"{message_id}/{block_id}"
    if len(plain) <= BATCH_ID_MAX_CHARS and all("!" <= ch <= "~" for ch in plain):
        return plain
    digest = hashlib.sha256(f"{message_id}\x00{block_id}".encode()).hexdigest()
    return f"pain001-{digest[:48]}"


def batches_of(initiation: CreditTransferInitiation) -> list[Pain001Batch]:
    found = []
    for block in initiation.payment_informations:
        # Declared totals are passed on for the server to check against what
        # it receives; without them, the block's own, which still catch a
        # transfer lost or doubled on the way.
        computed = sum((t.amount for t in block.transfers), Decimal(0))
        found.append(Pain001Batch(
            block=block,
            batch_id=batch_id_for(initiation.message_id, block.payment_information_id),
            payer=block.debtor_account,
            control_item_count=(block.item_count if block.item_count is not None
                                else len(block.transfers)),
            control_sum=block.control_sum_text or format(computed, "f")))
    return found


def transaction_of(transfer) -> batch_pb.BatchTransaction:
    """In minor units at the currency's exponent. An amount with more
    decimals than its currency has (or of an unknown currency) is sent
    exactly, with its own exponent as minor_units: the server rejects that
    transfer with the reason, and the control sum still adds up."""
    exponent = minor_units(transfer.currency)
    written = -transfer.amount.as_tuple().exponent
    money = money_pb2.Money(currency=transfer.currency)
    if exponent is not None and written <= exponent:
        money.amount_minor = int(transfer.amount.scaleb(exponent))
        money.minor_units = exponent
    else:
        money.amount_minor = int(transfer.amount.scaleb(written))
        money.minor_units = written
    return batch_pb.BatchTransaction(reference=transfer.reference,
                                     payee=transfer.creditor_account, amount=money)


def file_totals_mismatches(initiation: CreditTransferInitiation) -> list[tuple[str, str]]:
    """(ISO reason code, text) for each group-header total the file's own
    transfers contradict: such a file is refused whole, before sending."""
    transfers = initiation.transfers()
    found = []
    if initiation.item_count != len(transfers):
        found.append(("AM18", f"GrpHdr/NbOfTxs is {initiation.item_count}, the file has "
                              f"{len(transfers)} transfers"))
    total = sum((t.amount for t in transfers), Decimal(0))
    if initiation.control_sum is not None and initiation.control_sum != total:
        found.append(("AM10", f"GrpHdr/CtrlSum is {initiation.control_sum}, the transfers "
                              f"sum to {total}"))
    return found
