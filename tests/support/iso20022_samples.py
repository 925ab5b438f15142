"""pain.001.001.09 sample files made by the tests (no file from elsewhere):
blocks of credit transfers, with totals declared right or wrong."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tests.support.iso20022_structure import PAIN001

_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}")


@dataclass
class Transfer:
    end_to_end_id: str
    amount: str  # as written in the file, e.g. "12.50"
    currency: str
    creditor_account: str  # an IBAN, or any other id (written as Othr/Id)
    instruction_id: str = ""
    creditor_name: str = "Supplier"


@dataclass
class Block:
    payment_information_id: str
    debtor_iban: str
    transfers: list[Transfer]
    declare_totals: bool = True
    item_count: int | None = None  # None: the true count (when declared)
    control_sum: str | None = None  # None: the true sum (when declared)


@dataclass
class Pain001Sample:
    message_id: str
    blocks: list[Block]
    item_count: int | None = None  # None: the true count
    control_sum: str | None = None  # None: the true sum; "" leaves it out
    extra: dict = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        ns = f"{{{PAIN001}}}"

        def add(parent, tag, text=None, **attributes):
            element = ElementTree.SubElement(parent, ns + tag, attributes)
            if text is not None:
                element.text = text
            return element

        transfers = [t for b in self.blocks for t in b.transfers]
        document = ElementTree.Element(ns + "Document")
        body = add(document, "CstmrCdtTrfInitn")
        header = add(body, "GrpHdr")
        add(header, "MsgId", self.message_id)
        add(header, "CreDtTm", "2026-11-26T09:30:00")
        add(header, "NbOfTxs", str(len(transfers) if self.item_count is None
                                   else self.item_count))
        if self.control_sum != "":
            add(header, "CtrlSum", _total(transfers) if self.control_sum is None
                else self.control_sum)
        add(add(header, "InitgPty"), "Nm", "Example Payroll GmbH")
        for block in self.blocks:
            element = add(body, "PmtInf")
            add(element, "PmtInfId", block.payment_information_id)
            add(element, "PmtMtd", "TRF")
            if block.declare_totals:
                add(element, "NbOfTxs", str(len(block.transfers) if block.item_count is None
                                            else block.item_count))
                add(element, "CtrlSum", _total(block.transfers) if block.control_sum is None
                    else block.control_sum)
            add(add(element, "ReqdExctnDt"), "Dt", "2026-11-27")
            add(add(element, "Dbtr"), "Nm", "Example Payroll GmbH")
            add(add(add(element, "DbtrAcct"), "Id"), "IBAN", block.debtor_iban)
            add(add(add(element, "DbtrAgt"), "FinInstnId"), "BICFI", "DEUTDEFFXXX")
            add(element, "ChrgBr", "SLEV")
            for transfer in block.transfers:
                tx = add(element, "CdtTrfTxInf")
                payment_id = add(tx, "PmtId")
                if transfer.instruction_id:
                    add(payment_id, "InstrId", transfer.instruction_id)
                add(payment_id, "EndToEndId", transfer.end_to_end_id)
                add(add(tx, "Amt"), "InstdAmt", transfer.amount, Ccy=transfer.currency)
                add(add(tx, "Cdtr"), "Nm", transfer.creditor_name)
                account = add(add(tx, "CdtrAcct"), "Id")
                if _IBAN.fullmatch(transfer.creditor_account):
                    add(account, "IBAN", transfer.creditor_account)
                else:
                    add(add(account, "Othr"), "Id", transfer.creditor_account)
                add(add(tx, "RmtInf"), "Ustrd", f"Invoice {transfer.end_to_end_id}")
        ElementTree.indent(document)
        ElementTree.register_namespace("", PAIN001)
        ElementTree.ElementTree(document).write(path, encoding="UTF-8", xml_declaration=True)
        return path


def _total(transfers: list[Transfer]) -> str:
    return format(sum((Decimal(t.amount) for t in transfers), Decimal(0)), "f")


def iban(n: int) -> str:
    """A well-formed (not check-digit-true) German IBAN, distinct per n."""
    return f"DE{n % 97:02d}{n:018d}"
