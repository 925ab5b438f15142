"""`paygrid batch import-pain001 FILE`: pays an ISO 20022 pain.001 file as
batches (one per PmtInf, with its control totals) and writes a pain.002
status report.

Importing the same file again resumes it: the batch ids come from MsgId and
PmtInfId, so transfers already done are reported, not paid again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid_client.cli_batch_submit import RESUME_RETRY_POLICY
from paygrid_client.cli_exit_codes import EXIT_OK, EXIT_TRY_AGAIN, EXIT_USAGE, exit_code_for
from paygrid_client.errors import PaygridError
from paygrid_client.iso20022_batch import (
    Pain001Batch,
    batches_of,
    file_totals_mismatches,
    transaction_of,
)
from paygrid_client.iso20022_pain001 import Pain001Error, read_pain001
from paygrid_client.iso20022_pain002 import (
    NARRATIVE,
    BlockOutcome,
    StatusReason,
    status_report,
)
from paygrid_client.sync_client import PaygridClient


def default_report_path(source: Path) -> Path:
    return source.with_name(source.stem + ".pain002.xml")


def import_pain001(client: PaygridClient, source: Path, *, report_path: Path | None = None,
                   max_group_size: int = 0, parallelism: int = 0,
                   failure_policy: batch_pb.FailurePolicy.ValueType =
                   batch_pb.FAILURE_POLICY_UNSPECIFIED,
                   timeout_s: float | None = None) -> int:
    try:
        initiation = read_pain001(source)
    except (OSError, Pain001Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    report_path = report_path or default_report_path(source)
    batches = batches_of(initiation)
    refusals = [StatusReason(code, text) for code, text in file_totals_mismatches(initiation)]
    outcomes = [BlockOutcome(batch.block) for batch in batches]
    exit_code = EXIT_USAGE if refusals else EXIT_OK
    if not refusals:
        for batch, outcome in zip(batches, outcomes):
            code = _pay_block(client, batch, outcome, max_group_size, parallelism,
                              failure_policy, timeout_s)
            exit_code = max(exit_code, code)
    report = status_report(initiation, outcomes, refusals)
    report.write(report_path)
    print(f"{initiation.message_id}: {len(initiation.transfers())} transfers in "
          f"{len(batches)} batches, status {report.group_status}; report: {report_path}")
    for refusal in refusals:
        print(f"refused ({refusal.code}): {refusal.text}", file=sys.stderr)
    return exit_code


def _pay_block(client: PaygridClient, batch: Pain001Batch, outcome: BlockOutcome,
               max_group_size: int, parallelism: int,
               failure_policy: batch_pb.FailurePolicy.ValueType, timeout_s: float | None) -> int:
    """Submits one block and fills `outcome`; the CLI exit code for it."""
    transactions = [transaction_of(t) for t in batch.block.transfers]
    print(f"batch {batch.batch_id}: {len(transactions)} transfers from {batch.payer}",
          file=sys.stderr)
    code = EXIT_OK
    try:
        for response in client.submit_batch(
                batch.batch_id, batch.payer, transactions, max_group_size=max_group_size,
                parallelism=parallelism, failure_policy=failure_policy,
                control_item_count=batch.control_item_count,
                control_sum=batch.control_sum, timeout_s=timeout_s,
                retry_policy=RESUME_RETRY_POLICY):
            kind = response.WhichOneof("kind")
            if kind == "summary":
                if response.summary.status != batch_pb.BATCH_STATUS_COMPLETED:
                    code = EXIT_TRY_AGAIN
                continue
            items = response.group.items if kind == "group" else getattr(response, kind).items
            outcome.results.update((item.reference, item) for item in items)
    except PaygridError as error:
        print(f"batch {batch.batch_id} stopped: {error}", file=sys.stderr)
        code = exit_code_for(error)
        if code == EXIT_USAGE:
            outcome.refusal = _refusal(error)
    # The stored results are the record (a resumed batch streams only what
    # it did this time, a refused one nothing).
    try:
        for item in client.list_batch_items(batch.batch_id, timeout_s=timeout_s):
            outcome.results[item.transaction.reference] = item.result
    except PaygridError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            print(f"batch {batch.batch_id}: results not read: {error}", file=sys.stderr)
            code = max(code, exit_code_for(error))
    if outcome.refusal is not None and outcome.results:
        outcome.refusal = None  # stored per item, with each one's own reason
    return code


def _refusal(error: PaygridError) -> StatusReason:
    kinds = {v.type for v in error.precondition_violations}
    if "CONTROL_TOTALS_MISMATCH" in kinds or "BATCH_REJECTED" in kinds:
        code = "AM18" if " transactions" in error.message else "AM10"
    else:
        code = NARRATIVE
    return StatusReason(code, f"{error.code.name}: {error.message}")
