"""The structure ISO 20022 defines for pain.001.001.09 and pain.002.001.10
(the message definitions' XSDs), for the elements paygrid reads and writes,
and a checker: element order, cardinality, choices, no element the schema
does not define at that place, and the simple types' lexical rules.

Transcribed from the published schemas (CustomerCreditTransferInitiationV09,
CustomerPaymentStatusReportV10); elements paygrid never uses are left out,
so a document using them fails here: the check is strict, not lenient.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Callable

PAIN001 = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
PAIN002 = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"

UNBOUNDED = 10**9


def _max_text(limit: int) -> Callable[[str], bool]:
    return lambda text: 1 <= len(text) <= limit


def _pattern(expression: str) -> Callable[[str], bool]:
    compiled = re.compile(expression)
    return lambda text: compiled.fullmatch(text) is not None


_DECIMAL = r"\d{1,18}(\.\d{1,17})?"
SIMPLE_TYPES: dict[str, Callable[[str], bool]] = {
    "Max35Text": _max_text(35),
    "Max70Text": _max_text(70),
    "Max105Text": _max_text(105),
    "Max140Text": _max_text(140),
    "Max15NumericText": _pattern(r"[0-9]{1,15}"),
    "DecimalNumber": lambda t: _pattern(_DECIMAL)(t) and len(t.replace(".", "").lstrip("0")) <= 18,
    "ISODateTime": _pattern(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?"),
    "ISODate": _pattern(r"\d{4}-\d{2}-\d{2}"),
    "IBAN2007Identifier": _pattern(r"[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}"),
    "BICFIDec2014Identifier": _pattern(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?"),
    "PaymentMethod3Code": lambda t: t in {"CHK", "TRF", "TRA"},
    "ChargeBearerType1Code": lambda t: t in {"DEBT", "CRED", "SHAR", "SLEV"},
    "ExternalStatusReason1Code": _max_text(4),
    "ExternalPaymentTransactionStatus1Code": _max_text(4),
    "ExternalPaymentGroupStatus1Code": _max_text(4),
    # ActiveOrHistoricCurrencyAndAmount: 18 digits, 5 after the point, and a Ccy.
    "ActiveOrHistoricCurrencyAndAmount": lambda t: _pattern(r"\d{1,18}(\.\d{1,5})?")(t)
    and len(t.replace(".", "").lstrip("0")) <= 18,
}
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")

# Complex types: an ordered sequence of (element, min, max, type), or a
# choice: exactly one of (element, type).
Sequence_ = list[tuple[str, int, int, str]]
SEQUENCES: dict[str, Sequence_] = {
    # pain.001.001.09
    "Document001": [("CstmrCdtTrfInitn", 1, 1, "CustomerCreditTransferInitiationV09")],
    "CustomerCreditTransferInitiationV09": [
        ("GrpHdr", 1, 1, "GroupHeader85"), ("PmtInf", 1, UNBOUNDED, "PaymentInstruction30")],
    "GroupHeader85": [
        ("MsgId", 1, 1, "Max35Text"), ("CreDtTm", 1, 1, "ISODateTime"),
        ("NbOfTxs", 1, 1, "Max15NumericText"), ("CtrlSum", 0, 1, "DecimalNumber"),
        ("InitgPty", 1, 1, "PartyIdentification135")],
    "PartyIdentification135": [("Nm", 0, 1, "Max140Text")],
    "PaymentInstruction30": [
        ("PmtInfId", 1, 1, "Max35Text"), ("PmtMtd", 1, 1, "PaymentMethod3Code"),
        ("NbOfTxs", 0, 1, "Max15NumericText"), ("CtrlSum", 0, 1, "DecimalNumber"),
        ("ReqdExctnDt", 1, 1, "DateAndDateTime2Choice"),
        ("Dbtr", 1, 1, "PartyIdentification135"), ("DbtrAcct", 1, 1, "CashAccount38"),
        ("DbtrAgt", 1, 1, "BranchAndFinancialInstitutionIdentification6"),
        ("ChrgBr", 0, 1, "ChargeBearerType1Code"),
        ("CdtTrfTxInf", 1, UNBOUNDED, "CreditTransferTransaction34")],
    "CashAccount38": [("Id", 1, 1, "AccountIdentification4Choice")],
    "GenericAccountIdentification1": [("Id", 1, 1, "Max35Text")],
    "BranchAndFinancialInstitutionIdentification6": [
        ("FinInstnId", 1, 1, "FinancialInstitutionIdentification18")],
    "FinancialInstitutionIdentification18": [("BICFI", 0, 1, "BICFIDec2014Identifier")],
    "CreditTransferTransaction34": [
        ("PmtId", 1, 1, "PaymentIdentification6"), ("Amt", 1, 1, "AmountType4Choice"),
        ("Cdtr", 0, 1, "PartyIdentification135"), ("CdtrAcct", 0, 1, "CashAccount38"),
        ("RmtInf", 0, 1, "RemittanceInformation16")],
    "PaymentIdentification6": [
        ("InstrId", 0, 1, "Max35Text"), ("EndToEndId", 1, 1, "Max35Text")],
    "RemittanceInformation16": [("Ustrd", 0, UNBOUNDED, "Max140Text")],
    # pain.002.001.10
    "Document002": [("CstmrPmtStsRpt", 1, 1, "CustomerPaymentStatusReportV10")],
    "CustomerPaymentStatusReportV10": [
        ("GrpHdr", 1, 1, "GroupHeader86"), ("OrgnlGrpInfAndSts", 1, 1, "OriginalGroupHeader17"),
        ("OrgnlPmtInfAndSts", 0, UNBOUNDED, "OriginalPaymentInstruction32")],
    "GroupHeader86": [("MsgId", 1, 1, "Max35Text"), ("CreDtTm", 1, 1, "ISODateTime")],
    "OriginalGroupHeader17": [
        ("OrgnlMsgId", 1, 1, "Max35Text"), ("OrgnlMsgNmId", 1, 1, "Max35Text"),
        ("OrgnlCreDtTm", 0, 1, "ISODateTime"), ("OrgnlNbOfTxs", 0, 1, "Max15NumericText"),
        ("OrgnlCtrlSum", 0, 1, "DecimalNumber"),
        ("GrpSts", 0, 1, "ExternalPaymentGroupStatus1Code"),
        ("StsRsnInf", 0, UNBOUNDED, "StatusReasonInformation12"),
        ("NbOfTxsPerSts", 0, UNBOUNDED, "NumberOfTransactionsPerStatus5")],
    "OriginalPaymentInstruction32": [
        ("OrgnlPmtInfId", 1, 1, "Max35Text"), ("OrgnlNbOfTxs", 0, 1, "Max15NumericText"),
        ("OrgnlCtrlSum", 0, 1, "DecimalNumber"),
        ("PmtInfSts", 0, 1, "ExternalPaymentGroupStatus1Code"),
        ("StsRsnInf", 0, UNBOUNDED, "StatusReasonInformation12"),
        ("NbOfTxsPerSts", 0, UNBOUNDED, "NumberOfTransactionsPerStatus5"),
        ("TxInfAndSts", 0, UNBOUNDED, "PaymentTransaction105")],
    "StatusReasonInformation12": [
        ("Rsn", 0, 1, "StatusReason6Choice"), ("AddtlInf", 0, UNBOUNDED, "Max105Text")],
    "NumberOfTransactionsPerStatus5": [
        ("DtldNbOfTxs", 1, 1, "Max15NumericText"),
        ("DtldSts", 1, 1, "ExternalPaymentTransactionStatus1Code"),
        ("DtldCtrlSum", 0, 1, "DecimalNumber")],
    "PaymentTransaction105": [
        ("StsId", 0, 1, "Max35Text"), ("OrgnlInstrId", 0, 1, "Max35Text"),
        ("OrgnlEndToEndId", 0, 1, "Max35Text"),
        ("TxSts", 0, 1, "ExternalPaymentTransactionStatus1Code"),
        ("StsRsnInf", 0, UNBOUNDED, "StatusReasonInformation12"),
        ("AcctSvcrRef", 0, 1, "Max35Text")],
}
CHOICES: dict[str, list[tuple[str, str]]] = {
    "DateAndDateTime2Choice": [("Dt", "ISODate"), ("DtTm", "ISODateTime")],
    "AccountIdentification4Choice": [("IBAN", "IBAN2007Identifier"),
                                     ("Othr", "GenericAccountIdentification1")],
    "AmountType4Choice": [("InstdAmt", "ActiveOrHistoricCurrencyAndAmount")],
    "StatusReason6Choice": [("Cd", "ExternalStatusReason1Code"), ("Prtry", "Max35Text")],
}
# Where the schema puts an attribute on a simple type.
ATTRIBUTES = {"ActiveOrHistoricCurrencyAndAmount": "Ccy"}


def structure_errors(document: ElementTree.Element | bytes | str) -> list[str]:
    """Every way `document` departs from its message's structure; [] when
    it conforms."""
    root = (document if isinstance(document, ElementTree.Element)
            else ElementTree.fromstring(document))
    for namespace, document_type in ((PAIN001, "Document001"), (PAIN002, "Document002")):
        if root.tag == f"{{{namespace}}}Document":
            errors: list[str] = []
            _check(root, document_type, namespace, "Document", errors)
            return errors
    return [f"root {root.tag} is neither a pain.001.001.09 nor a pain.002.001.10 Document"]


def _local(element: ElementTree.Element, namespace: str) -> str | None:
    prefix = f"{{{namespace}}}"
    return element.tag[len(prefix):] if element.tag.startswith(prefix) else None


def _check(element: ElementTree.Element, type_name: str, namespace: str, path: str,
           errors: list[str]) -> None:
    if type_name in SIMPLE_TYPES:
        if len(element):
            errors.append(f"{path}: a {type_name} has no child elements")
        text = element.text or ""
        if not SIMPLE_TYPES[type_name](text):
            errors.append(f"{path}: {text!r} is not a valid {type_name}")
        attribute = ATTRIBUTES.get(type_name)
        if attribute and not _CURRENCY_CODE.fullmatch(element.get(attribute, "")):
            errors.append(f"{path}: attribute {attribute} must be a 3-letter currency code")
        return
    if (element.text or "").strip():
        errors.append(f"{path}: {type_name} holds elements, not text")
    children = list(element)
    names = [_local(child, namespace) for child in children]
    if None in names:
        errors.append(f"{path}: an element outside namespace {namespace}")
        return
    if type_name in CHOICES:
        options = dict(CHOICES[type_name])
        if len(children) != 1 or names[0] not in options:
            errors.append(f"{path}: {type_name} needs exactly one of {sorted(options)}, "
                          f"has {names}")
            return
        _check(children[0], options[names[0]], namespace, f"{path}/{names[0]}", errors)
        return
    position = 0
    for name, low, high, child_type in SEQUENCES[type_name]:
        count = 0
        while position < len(children) and names[position] == name:
            _check(children[position], child_type, namespace, f"{path}/{name}", errors)
            position += 1
            count += 1
        if not low <= count <= high:
            errors.append(f"{path}: {name} occurs {count} times; {low} to "
                          f"{'unbounded' if high == UNBOUNDED else high} allowed")
    if position < len(children):
        errors.append(f"{path}: {names[position]} is not allowed here by {type_name} "
                      f"(order: {[n for n, *_ in SEQUENCES[type_name]]})")
