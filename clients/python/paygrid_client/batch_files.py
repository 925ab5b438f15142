"""Batch files: a CSV or JSON Lines file of transactions in, a JSON Lines
file of results out.

Input columns (CSV header or JSON keys): reference, payee, currency,
amount_minor, and optionally channel and requested_at (ISO 8601). A bad
amount is sent as 0 so the server rejects that item, with its reference,
and the rest of the batch goes on; a line that cannot be read at all (bad
JSON, bad requested_at) stops the file before anything is sent.

The default batch id is a digest of the file, so submitting the same file
again resumes the same batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from google.protobuf import timestamp_pb2

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as batch_pb

COLUMNS = ("reference", "payee", "currency", "amount_minor", "channel", "requested_at")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ITEM_STATUS_NAMES = {value: name.removeprefix("BATCH_ITEM_STATUS_")
                     for name, value in batch_pb.BatchItemStatus.items()}


class BatchFileError(ValueError):
    """A line of the input file that cannot be read."""


class BatchFile:
    """The transactions of a file, read lazily on every iteration (files of
    any size; a retried submission reads them again)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.is_csv = self.path.suffix.lower() == ".csv"

    def default_batch_id(self) -> str:
        return f"file-{file_digest(self.path)[:32]}"

    def __iter__(self) -> Iterator[batch_pb.BatchTransaction]:
        for line_no, row in self._rows():
            try:
                yield row_transaction(row)
            except (TypeError, ValueError) as error:
                raise BatchFileError(f"{self.path}:{line_no}: {error}") from error

    def check(self) -> int:
        """Reads the whole file once; returns its number of transactions or
        raises BatchFileError for the first unreadable line."""
        return sum(1 for _ in self)

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open(newline="") as source:
            if self.is_csv:
                reader = csv.DictReader(source)
                for row in reader:
                    yield reader.line_num, row
                return
            for line_no, line in enumerate(source, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BatchFileError(f"{self.path}:{line_no}: not JSON: {error}") from error
                if not isinstance(row, dict):
                    raise BatchFileError(f"{self.path}:{line_no}: expected a JSON object")
                yield line_no, row


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def row_transaction(row: dict[str, Any]) -> batch_pb.BatchTransaction:
    transaction = batch_pb.BatchTransaction(reference=str(row.get("reference") or ""),
                                            payee=str(row.get("payee") or ""),
                                            channel=str(row.get("channel") or ""))
    raw_amount = row.get("amount_minor", "")
    try:
        # Whole minor units only: "12.50" or 12.5 is not an amount.
        amount_minor = raw_amount if isinstance(raw_amount, int) else int(str(raw_amount))
    except (TypeError, ValueError):
        amount_minor = 0  # the server rejects this item, with its reference, and goes on
    if isinstance(amount_minor, bool) or not INT64_MIN <= amount_minor <= INT64_MAX:
        amount_minor = 0
    transaction.amount.CopyFrom(money_pb2.Money(currency=str(row.get("currency") or ""),
                                                amount_minor=amount_minor))
    if row.get("requested_at"):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(datetime.fromisoformat(str(row["requested_at"])))
        transaction.requested_at.CopyFrom(stamp)
    return transaction


def result_record(result: batch_pb.BatchItemResult) -> dict[str, Any]:
    """One line of the results file."""
    return {"reference": result.reference, "status": ITEM_STATUS_NAMES[result.status],
            "channel": result.channel, "channel_reference": result.channel_reference,
            "failure_reason": result.failure.reason,
            "decline_code": result.failure.decline_code,
            "message": result.failure.message, "group_no": result.group_no}


def result_line(result: batch_pb.BatchItemResult) -> str:
    return json.dumps(result_record(result)) + "\n"
