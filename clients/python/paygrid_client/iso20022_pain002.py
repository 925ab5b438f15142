"""Writes an ISO 20022 pain.002.001.10 (CustomerPaymentStatusReport) for an
imported pain.001: the file's status, each payment information block's, and
each transfer's, with ISO reason codes and paygrid's own words."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.iso20022_pain001 import CreditTransferInitiation, PaymentInformation

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"
ADDITIONAL_INFO_MAX_CHARS = 105  # Max105Text
ADDITIONAL_INFO_MAX_LINES = 3

# ExternalPaymentTransactionStatus1Code values paygrid reports.
ACCEPTED_SETTLED = "ACSC"  # charged
REJECTED = "RJCT"
PENDING = "PDNG"  # not final yet: import the same file again to finish it
PARTIAL = "PART"  # group and block level: some accepted, some rejected

# paygrid failure reasons (and decline codes) as ExternalStatusReason1Code.
# Both reasons are declines (INSUFFICIENT_FUNDS: decline code insufficient_funds).
_DECLINES = ("DECLINED", "INSUFFICIENT_FUNDS")
_DECLINE_REASONS = {"insufficient_funds": "AM04", "account_closed": "AC04",
                    "invalid_account": "AC01"}
_FAILURE_REASONS = {"DUPLICATE_REFERENCE": "AM05", "REFERENCE_CONFLICT": "AM05"}
NOT_SPECIFIED = "MS03"  # NotSpecifiedReasonAgentGenerated: AddtlInf says why
NARRATIVE = "NARR"


@dataclass(frozen=True, slots=True)
class StatusReason:
    code: str
    text: str


@dataclass(slots=True)
class BlockOutcome:
    """What became of one PmtInf: its transfers' results by reference, or
    why the whole block was refused."""
    block: PaymentInformation
    results: dict[str, batch_pb.BatchItemResult] = field(default_factory=dict)
    refusal: StatusReason | None = None


def reason_for(failure: batch_pb.Failure) -> StatusReason:
    if failure.reason in _DECLINES:
        code = _DECLINE_REASONS.get(failure.decline_code, NOT_SPECIFIED)
    elif failure.reason == "CONTROL_TOTALS_MISMATCH":
        code = "AM18" if " transactions" in failure.message else "AM10"
    elif failure.reason == "INVALID_ITEM":
        code = NARRATIVE
    else:
        code = _FAILURE_REASONS.get(failure.reason, NOT_SPECIFIED)
    text = failure.reason + (f" ({failure.decline_code})" if failure.decline_code else "")
    return StatusReason(code, f"{text}: {failure.message}" if failure.message else text)


def _transfer_status(outcome: BlockOutcome, reference: str,
                     seen: set[str]) -> tuple[str, StatusReason | None, str]:
    """(status, reason, channel reference) of one transfer of the block."""
    if reference in seen:
        return REJECTED, StatusReason("AM05", f"reference {reference!r} appears twice"), ""
    seen.add(reference)
    if outcome.refusal is not None:
        return REJECTED, outcome.refusal, ""
    result = outcome.results.get(reference)
    if result is None:
        return PENDING, StatusReason(NARRATIVE, "not processed yet; import the file again"), ""
    if result.status == batch_pb.BATCH_ITEM_STATUS_SUCCEEDED:
        return ACCEPTED_SETTLED, None, result.channel_reference
    if result.status in (batch_pb.BATCH_ITEM_STATUS_FAILED, batch_pb.BATCH_ITEM_STATUS_REJECTED):
        return REJECTED, reason_for(result.failure), result.channel_reference
    return PENDING, StatusReason(NARRATIVE, "not final yet; import the file again"), ""


def overall_status(statuses: Counter) -> str:
    if statuses[PENDING]:
        return PENDING
    if not statuses[REJECTED]:
        return ACCEPTED_SETTLED
    return REJECTED if not statuses[ACCEPTED_SETTLED] else PARTIAL


class _Builder:
    def __init__(self) -> None:
        self.root = ElementTree.Element(f"{{{NAMESPACE}}}Document")

    @staticmethod
    def add(parent: ElementTree.Element, tag: str, text: str | None = None,
            **attributes: str) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, f"{{{NAMESPACE}}}{tag}", attributes)
        if text is not None:
            element.text = text
        return element

    def reason(self, parent: ElementTree.Element, reason: StatusReason) -> None:
        info = self.add(parent, "StsRsnInf")
        self.add(self.add(info, "Rsn"), "Cd", reason.code)
        text = reason.text
        for start in range(0, min(len(text), ADDITIONAL_INFO_MAX_CHARS * ADDITIONAL_INFO_MAX_LINES),
                           ADDITIONAL_INFO_MAX_CHARS):
            self.add(info, "AddtlInf", text[start:start + ADDITIONAL_INFO_MAX_CHARS])

    def counts(self, parent: ElementTree.Element, statuses: Counter) -> None:
        for status in (ACCEPTED_SETTLED, REJECTED, PENDING):
            if statuses[status]:
                per_status = self.add(parent, "NbOfTxsPerSts")
                self.add(per_status, "DtldNbOfTxs", str(statuses[status]))
                self.add(per_status, "DtldSts", status)


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class StatusReport:
    document: ElementTree.ElementTree
    group_status: str  # GrpSts

    def write(self, path: Path) -> None:
        ElementTree.register_namespace("", NAMESPACE)
        self.document.write(path, encoding="UTF-8", xml_declaration=True)


def status_report(initiation: CreditTransferInitiation, outcomes: list[BlockOutcome],
                  file_refusals: list[StatusReason]) -> StatusReport:
    """The report. `file_refusals`: why the whole file was refused before
    anything was sent (then every block and transfer is RJCT)."""
    b = _Builder()
    report = b.add(b.root, "CstmrPmtStsRpt")
    header = b.add(report, "GrpHdr")
    b.add(header, "MsgId", f"paygrid-{uuid.uuid4().hex[:24]}")
    b.add(header, "CreDtTm", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    group = b.add(report, "OrgnlGrpInfAndSts")
    b.add(group, "OrgnlMsgId", initiation.message_id)
    b.add(group, "OrgnlMsgNmId", initiation.message_name)
    b.add(group, "OrgnlCreDtTm", initiation.created_at)
    b.add(group, "OrgnlNbOfTxs", str(initiation.item_count))
    if initiation.control_sum is not None:
        b.add(group, "OrgnlCtrlSum", _decimal_text(initiation.control_sum))
    group_status = b.add(group, "GrpSts")
    for refusal in file_refusals:
        b.reason(group, refusal)

    everything: Counter = Counter()
    for outcome in outcomes:
        block = outcome.block
        if file_refusals:
            outcome = BlockOutcome(block, refusal=StatusReason(
                file_refusals[0].code, "the file was refused: " + file_refusals[0].text))
        element = b.add(report, "OrgnlPmtInfAndSts")
        b.add(element, "OrgnlPmtInfId", block.payment_information_id)
        if block.item_count is not None:
            b.add(element, "OrgnlNbOfTxs", str(block.item_count))
        if block.control_sum is not None:
            b.add(element, "OrgnlCtrlSum", _decimal_text(block.control_sum))
        block_status = b.add(element, "PmtInfSts")
        if outcome.refusal is not None:
            b.reason(element, outcome.refusal)
        rows = []
        statuses: Counter = Counter()
        seen: set[str] = set()
        for transfer in block.transfers:
            status, reason, channel_reference = _transfer_status(outcome, transfer.reference, seen)
            statuses[status] += 1
            rows.append((transfer, status, reason, channel_reference))
        b.counts(element, statuses)
        for transfer, status, reason, channel_reference in rows:
            tx = b.add(element, "TxInfAndSts")
            if transfer.instruction_id:
                b.add(tx, "OrgnlInstrId", transfer.instruction_id)
            b.add(tx, "OrgnlEndToEndId", transfer.end_to_end_id)
            b.add(tx, "TxSts", status)
            if reason is not None:
                b.reason(tx, reason)
            if channel_reference:
                b.add(tx, "AcctSvcrRef", channel_reference[:35])
        block_status.text = overall_status(statuses)
        everything.update(statuses)
    group_status.text = REJECTED if file_refusals else overall_status(everything)
    b.counts(group, everything)
    ElementTree.indent(b.root)
    return StatusReport(ElementTree.ElementTree(b.root), group_status.text)
