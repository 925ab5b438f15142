"""`paygrid batch import-pain001`: an ISO 20022 pain.001 file, made by the
test, paid through a real server and channels; the pain.002 status report
it writes is checked against the structure the standard defines and against
the channels' own ledgers."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.support.iso20022_samples import Block, Pain001Sample, Transfer, iban
from tests.support.iso20022_structure import PAIN002, structure_errors
from tests.clients.test_cli import paygrid_cli

NS = {"p": PAIN002}


def _payroll(**changes) -> Pain001Sample:
    eur = Block("PAYROLL-EUR", iban(1), [
        Transfer("E2E-1", "2500.00", "EUR", iban(101), instruction_id="INSTR-1"),
        Transfer("E2E-2", "1999.5", "EUR", iban(102), instruction_id="INSTR-2"),
        Transfer("E2E-3", "100.00", "EUR", "decline_insufficient_funds",
                 instruction_id="INSTR-3"),
        Transfer("E2E-4", "10.001", "EUR", iban(104), instruction_id="INSTR-4"),  # 3 decimals
    ])
    jpy = Block("PAYOUT-JPY", iban(2), [
        Transfer("JP-1", "300", "JPY", iban(201)),
        Transfer("JP-2", "4500", "JPY", iban(202)),
    ])
    sample = Pain001Sample("MSG-2026-11-26-001", [eur, jpy])
    for key, value in changes.items():
        setattr(sample, key, value)
    return sample


async def _import(paygrid, source: Path, *args: str) -> tuple[int, str, str, ElementTree.Element]:
    report = source.with_suffix(".pain002.xml")
    code, out, err = await paygrid_cli(f"127.0.0.1:{paygrid.app.port}", "batch",
                                       "import-pain001", str(source), "--status-report",
                                       str(report), *args)
    root = ElementTree.parse(report).getroot()
    return code, out, err, root


def _transactions(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    found = {}
    for tx in root.iterfind(".//p:TxInfAndSts", NS):
        ident = tx.findtext("p:OrgnlInstrId", namespaces=NS) or tx.findtext(
            "p:OrgnlEndToEndId", namespaces=NS)
        found[ident] = tx
    return found


def _status(tx: ElementTree.Element) -> tuple[str, str | None]:
    return tx.findtext("p:TxSts", namespaces=NS), tx.findtext("p:StsRsnInf/p:Rsn/p:Cd",
                                                              namespaces=NS)


def test_the_samples_conform_to_pain001(tmp_path: Path) -> None:
    source = _payroll().write(tmp_path / "payroll.xml")
    assert structure_errors(source.read_bytes()) == []
    # The checker is strict: an element out of order is caught.
    broken = source.read_text().replace("<PmtMtd>TRF</PmtMtd>", "").replace(
        "<ChrgBr>SLEV</ChrgBr>", "<ChrgBr>SLEV</ChrgBr><PmtMtd>TRF</PmtMtd>")
    assert any("PmtMtd" in error for error in structure_errors(broken))


async def test_a_file_is_paid_per_block_and_reported_per_transfer(paygrid, tmp_path) -> None:
    source = _payroll().write(tmp_path / "payroll.xml")
    code, out, err, root = await _import(paygrid, source)
    assert code == 0, err
    assert structure_errors(root) == []
    assert "status PART" in out

    assert root.findtext("p:CstmrPmtStsRpt/p:OrgnlGrpInfAndSts/p:OrgnlMsgId", namespaces=NS) == (
        "MSG-2026-11-26-001")
    assert root.findtext(".//p:OrgnlMsgNmId", namespaces=NS) == "pain.001.001.09"
    assert root.findtext(".//p:GrpSts", namespaces=NS) == "PART"
    blocks = {b.findtext("p:OrgnlPmtInfId", namespaces=NS): b.findtext("p:PmtInfSts", namespaces=NS)
              for b in root.iterfind(".//p:OrgnlPmtInfAndSts", NS)}
    assert blocks == {"PAYROLL-EUR": "PART", "PAYOUT-JPY": "ACSC"}

    txs = _transactions(root)
    assert {ident: _status(tx) for ident, tx in txs.items()} == {
        "INSTR-1": ("ACSC", None), "INSTR-2": ("ACSC", None),
        "INSTR-3": ("RJCT", "AM04"),  # declined: insufficient funds
        "INSTR-4": ("RJCT", "NARR"),  # more decimals than EUR has
        "JP-1": ("ACSC", None), "JP-2": ("ACSC", None)}
    assert "minor_units" in " ".join(t.text for t in txs["INSTR-4"].iterfind(".//p:AddtlInf", NS))

    # Exactly the accepted transfers were charged, in minor units, to the
    # creditor accounts, and the report names each charge.
    captured = {c.payee: c for c in paygrid.captured_everywhere()}
    assert {payee: (c.amount.currency, c.amount.amount_minor) for payee, c in captured.items()} == {
        iban(101): ("EUR", 250_000), iban(102): ("EUR", 199_950),
        iban(201): ("JPY", 300), iban(202): ("JPY", 4_500)}
    assert {txs[i].findtext("p:AcctSvcrRef", namespaces=NS) for i in
            ("INSTR-1", "INSTR-2", "JP-1", "JP-2")} == {c.charge_id for c in captured.values()}

    # Importing the same file again resumes it: nothing is paid twice.
    code, _, err, again = await _import(paygrid, source)
    assert code == 0, err
    assert {i: _status(tx) for i, tx in _transactions(again).items()} == {
        i: _status(tx) for i, tx in txs.items()}
    assert len(paygrid.captured_everywhere()) == 4


@pytest.mark.parametrize("changes, reason", [
    ({"item_count": 7}, "AM18"),
    ({"control_sum": "9999.99"}, "AM10"),
])
async def test_a_file_whose_group_totals_are_wrong_is_refused_whole(paygrid, tmp_path, changes,
                                                                    reason) -> None:
    source = _payroll(**changes).write(tmp_path / "payroll.xml")
    code, _, err, root = await _import(paygrid, source)
    assert code == 2
    assert structure_errors(root) == []
    assert root.findtext(".//p:GrpSts", namespaces=NS) == "RJCT"
    assert root.findtext("p:CstmrPmtStsRpt/p:OrgnlGrpInfAndSts/p:StsRsnInf/p:Rsn/p:Cd",
                         namespaces=NS) == reason
    assert {_status(tx)[0] for tx in _transactions(root).values()} == {"RJCT"}
    assert paygrid.captured_everywhere() == []
    assert paygrid.rows("SELECT count(*) FROM batches") == [(0,)]  # nothing was sent


async def test_a_block_whose_declared_totals_are_wrong_is_rejected_by_the_server(
        paygrid, tmp_path) -> None:
    sample = _payroll()
    sample.blocks[1].control_sum = "4801"  # the JPY block sums to 4800
    sample.control_sum = ""  # the group header declares no sum, so the file passes
    source = sample.write(tmp_path / "payroll.xml")
    code, _, err, root = await _import(paygrid, source)
    assert code == 2, err
    assert structure_errors(root) == []
    blocks = {b.findtext("p:OrgnlPmtInfId", namespaces=NS): b
              for b in root.iterfind(".//p:OrgnlPmtInfAndSts", NS)}
    assert blocks["PAYOUT-JPY"].findtext("p:PmtInfSts", namespaces=NS) == "RJCT"
    jpy = [_status(tx) for tx in blocks["PAYOUT-JPY"].iterfind("p:TxInfAndSts", NS)]
    assert jpy == [("RJCT", "AM10"), ("RJCT", "AM10")]
    assert root.findtext(".//p:GrpSts", namespaces=NS) == "PART"  # the EUR block went through
    assert sorted(c.amount.currency for c in paygrid.captured_everywhere()) == ["EUR", "EUR"]
