"""Reads an ISO 20022 pain.001 (CustomerCreditTransferInitiation) file: the
parts paygrid needs to pay it as batches, one batch per payment information
block (PmtInf: one debtor account, many credit transfers).

Versions 001.001.03 to 001.001.11 share these elements. Amounts stay Decimal
as written; the conversion to minor units is paygrid_client.iso20022_batch's.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:pain.001.001."
MAX_FILE_BYTES = 512 * 1024 * 1024  # about a million transfers
_DECIMAL = re.compile(r"\d{1,18}(\.\d{1,17})?")


class Pain001Error(ValueError):
    """The file is not a pain.001 this reader can use; says where."""


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    instruction_id: str  # PmtId/InstrId, may be empty
    end_to_end_id: str  # PmtId/EndToEndId
    amount: Decimal  # Amt/InstdAmt, in major units
    currency: str  # Amt/InstdAmt/@Ccy
    creditor_name: str  # Cdtr/Nm, may be empty
    creditor_account: str  # CdtrAcct/Id: IBAN, or Othr/Id

    @property
    def reference(self) -> str:
        """The transfer's id in the batch: InstrId when given (EndToEndId
        may be NOTPROVIDED for every transfer), else EndToEndId."""
        return self.instruction_id or self.end_to_end_id


@dataclass(frozen=True, slots=True)
class PaymentInformation:
    payment_information_id: str  # PmtInfId
    debtor_account: str  # DbtrAcct/Id: IBAN, or Othr/Id
    item_count: int | None  # NbOfTxs, when declared
    control_sum: Decimal | None  # CtrlSum, when declared
    control_sum_text: str  # CtrlSum as written ("" when absent)
    transfers: list[CreditTransfer]


@dataclass(frozen=True, slots=True)
class CreditTransferInitiation:
    namespace: str
    message_id: str  # GrpHdr/MsgId
    created_at: str  # GrpHdr/CreDtTm, as written
    item_count: int  # GrpHdr/NbOfTxs
    control_sum: Decimal | None  # GrpHdr/CtrlSum
    payment_informations: list[PaymentInformation]

    @property
    def message_name(self) -> str:
        """e.g. pain.001.001.09, for the status report's OrgnlMsgNmId."""
        return "pain.001.001." + self.namespace.removeprefix(NAMESPACE_PREFIX)

    def transfers(self) -> list[CreditTransfer]:
        return [t for block in self.payment_informations for t in block.transfers]


def read_pain001(path: Path) -> CreditTransferInitiation:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise Pain001Error(f"{path}: {size} bytes; at most {MAX_FILE_BYTES}")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise Pain001Error(f"{path}: not well-formed XML: {error}") from error
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    if not namespace.startswith(NAMESPACE_PREFIX) or root.tag != f"{{{namespace}}}Document":
        raise Pain001Error(f"{path}: the root is {root.tag}, not a pain.001 Document "
                           f"({NAMESPACE_PREFIX}NN)")
    return _Reader(path, namespace).initiation(root)


class _Reader:
    def __init__(self, path: Path, namespace: str) -> None:
        self._path = path
        self._ns = namespace

    def _child(self, parent: ElementTree.Element, path: str, where: str,
               required: bool = True) -> ElementTree.Element | None:
        found = parent.find("/".join(f"{{{self._ns}}}{step}" for step in path.split("/")))
        if found is None and required:
            raise Pain001Error(f"{self._path}: {where}: {path} is missing")
        return found

    def _text(self, parent: ElementTree.Element, path: str, where: str,
              required: bool = True) -> str:
        found = self._child(parent, path, where, required)
        text = (found.text or "").strip() if found is not None else ""
        if required and not text:
            raise Pain001Error(f"{self._path}: {where}: {path} is empty")
        return text

    def _decimal(self, text: str, where: str) -> Decimal:
        if not _DECIMAL.fullmatch(text):
            raise Pain001Error(f"{self._path}: {where}: {text!r} is not a plain decimal amount")
        try:
            return Decimal(text)
        except InvalidOperation as error:  # pragma: no cover - the pattern admits only decimals
            raise Pain001Error(f"{self._path}: {where}: {text!r}: {error}") from error

    def _count(self, text: str, where: str) -> int:
        if not text.isascii() or not text.isdigit() or len(text) > 15:
            raise Pain001Error(f"{self._path}: {where}: NbOfTxs {text!r} is not a count")
        return int(text)

    def _account(self, parent: ElementTree.Element, path: str, where: str) -> str:
        account = self._child(parent, path, where)
        iban = self._text(account, "Id/IBAN", where, required=False)
        return iban or self._text(account, "Id/Othr/Id", f"{where} ({path} has no IBAN)")

    def initiation(self, root: ElementTree.Element) -> CreditTransferInitiation:
        body = self._child(root, "CstmrCdtTrfInitn", "Document")
        header = self._child(body, "GrpHdr", "CstmrCdtTrfInitn")
        control = self._text(header, "CtrlSum", "GrpHdr", required=False)
        blocks = [self._payment_information(block, n)
                  for n, block in enumerate(body.findall(f"{{{self._ns}}}PmtInf"), start=1)]
        if not blocks:
            raise Pain001Error(f"{self._path}: CstmrCdtTrfInitn: no PmtInf")
        return CreditTransferInitiation(
            namespace=self._ns,
            message_id=self._text(header, "MsgId", "GrpHdr"),
            created_at=self._text(header, "CreDtTm", "GrpHdr"),
            item_count=self._count(self._text(header, "NbOfTxs", "GrpHdr"), "GrpHdr"),
            control_sum=self._decimal(control, "GrpHdr/CtrlSum") if control else None,
            payment_informations=blocks)

    def _payment_information(self, block: ElementTree.Element, n: int) -> PaymentInformation:
        where = f"PmtInf[{n}]"
        count = self._text(block, "NbOfTxs", where, required=False)
        control = self._text(block, "CtrlSum", where, required=False)
        transfers = [self._transfer(tx, f"{where}/CdtTrfTxInf[{i}]")
                     for i, tx in enumerate(block.findall(f"{{{self._ns}}}CdtTrfTxInf"), start=1)]
        if not transfers:
            raise Pain001Error(f"{self._path}: {where}: no CdtTrfTxInf")
        return PaymentInformation(
            payment_information_id=self._text(block, "PmtInfId", where),
            debtor_account=self._account(block, "DbtrAcct", where),
            item_count=self._count(count, where) if count else None,
            control_sum=self._decimal(control, f"{where}/CtrlSum") if control else None,
            control_sum_text=control,
            transfers=transfers)

    def _transfer(self, tx: ElementTree.Element, where: str) -> CreditTransfer:
        amount = self._child(tx, "Amt/InstdAmt", where)
        currency = amount.get("Ccy", "")
        if not currency:
            raise Pain001Error(f"{self._path}: {where}: Amt/InstdAmt has no Ccy")
        return CreditTransfer(
            instruction_id=self._text(tx, "PmtId/InstrId", where, required=False),
            end_to_end_id=self._text(tx, "PmtId/EndToEndId", where),
            amount=self._decimal((amount.text or "").strip(), f"{where}/Amt/InstdAmt"),
            currency=currency,
            creditor_name=self._text(tx, "Cdtr/Nm", where, required=False),
            creditor_account=self._account(tx, "CdtrAcct", where))
