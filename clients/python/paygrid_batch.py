"""paygrid batch CLI: submit a CSV or JSON Lines file as one batch.

  .venv/bin/python clients/python/paygrid_batch.py submit payroll.csv \
      --payer acct_000012345678 --output results.jsonl

Input columns (CSV header or JSON keys): reference, payee, currency,
amount_minor, and optionally channel and requested_at (ISO 8601).
Results: one JSON line per item (reference, status, channel,
channel_reference, failure_reason, decline_code, message, group_no).

Resuming: the batch id defaults to a digest of the input file, so running the
same command again after an interruption (Ctrl-C, lost connection, server
restart) resumes that batch: items already done come back as stored results
and are not paid again; the results file is written anew, complete.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import batch_service_pb2_grpc as pb_grpc

CHUNK_ITEMS = 500
FIELDS = ("reference", "payee", "currency", "amount_minor", "channel", "requested_at")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows(path: Path) -> Iterator[dict]:
    """Rows of a .csv or .jsonl file, read lazily: files of any size."""
    with path.open(newline="") as source:
        if path.suffix.lower() == ".csv":
            yield from csv.DictReader(source)
        else:
            for line in source:
                if line.strip():
                    yield json.loads(line)


def count_rows(path: Path) -> int:
    with path.open("rb") as source:
        lines = sum(1 for line in source if line.strip())
    return lines - 1 if path.suffix.lower() == ".csv" else lines


def transaction(row: dict) -> pb.BatchTransaction:
    tx = pb.BatchTransaction(reference=str(row.get("reference", "")),
                             payee=str(row.get("payee", "")),
                             channel=str(row.get("channel") or ""))
    try:
        amount = int(row.get("amount_minor", ""))
    except (TypeError, ValueError):
        amount = 0  # the server rejects this item, with its reference, and goes on
    tx.amount.CopyFrom(money_pb2.Money(currency=str(row.get("currency", "")), amount_minor=amount))
    if row.get("requested_at"):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(datetime.fromisoformat(str(row["requested_at"])))
        tx.requested_at.CopyFrom(stamp)
    return tx


def requests(args: argparse.Namespace) -> Iterator[pb.SubmitBatchRequest]:
    yield pb.SubmitBatchRequest(header=pb.BatchHeader(
        batch_id=args.batch_id, payer=args.payer, max_group_size=args.group_size,
        parallelism=args.parallelism))
    chunk: list[pb.BatchTransaction] = []
    for row in rows(args.input):
        chunk.append(transaction(row))
        if len(chunk) == CHUNK_ITEMS:
            yield pb.SubmitBatchRequest(transactions=pb.BatchTransactions(transactions=chunk))
            chunk = []
    if chunk:
        yield pb.SubmitBatchRequest(transactions=pb.BatchTransactions(transactions=chunk))


MAX_BUSY_RETRIES = 120


def retry_delay_s(error: grpc.RpcError) -> float:
    """The server's RetryInfo delay, or one second."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToMicroseconds() / 1e6
    return 1.0


STATUS = {v: k.removeprefix("BATCH_ITEM_STATUS_") for k, v in pb.BatchItemStatus.items()}


def result_line(result: pb.BatchItemResult) -> str:
    return json.dumps({
        "reference": result.reference, "status": STATUS[result.status],
        "channel": result.channel, "channel_reference": result.channel_reference,
        "failure_reason": result.failure.reason, "decline_code": result.failure.decline_code,
        "message": result.failure.message, "group_no": result.group_no}) + "\n"


class Progress:
    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.by_status: dict[str, int] = {}
        self.started = time.monotonic()
        self._shown = 0.0

    def add(self, results) -> None:
        for result in results:
            self.done += 1
            name = STATUS[result.status]
            self.by_status[name] = self.by_status.get(name, 0) + 1
        self.show()

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < 0.2:
            return
        self._shown = now
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * 30)
        rate = self.done / max(now - self.started, 1e-6)
        counts = " ".join(f"{k.lower()}={v}" for k, v in sorted(self.by_status.items()))
        sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} {rate:,.0f} items/s {counts}")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def submit(args: argparse.Namespace) -> int:
    args.batch_id = args.batch_id or f"file-{file_digest(args.input)[:32]}"
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.BatchServiceStub(channel)
        try:
            prior = stub.GetBatch(pb.GetBatchRequest(batch_id=args.batch_id)).batch
            print(f"resuming batch {args.batch_id} ({prior.counts.succeeded} succeeded so far)",
                  file=sys.stderr)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            print(f"submitting batch {args.batch_id}", file=sys.stderr)
        for _ in range(MAX_BUSY_RETRIES):
            progress = Progress(count_rows(args.input))
            summary = None
            with args.output.open("w") as out:
                try:
                    for response in stub.SubmitBatch(requests(args)):
                        kind = response.WhichOneof("kind")
                        if kind == "summary":
                            summary = response.summary
                            continue
                        results = (response.group.items if kind == "group"
                                   else getattr(response, kind).items)
                        out.writelines(result_line(r) for r in results)
                        progress.add(results)
                    break
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.ABORTED:
                        # An earlier submission of this batch is still finishing its groups.
                        time.sleep(retry_delay_s(error))
                        continue
                    progress.show(final=True)
                    print(f"stopped: {error.code().name}: {error.details()}; run the same "
                          "command again to resume", file=sys.stderr)
                    return 3
        else:
            print(f"batch {args.batch_id} stayed busy; try again later", file=sys.stderr)
            return 3
    progress.show(final=True)
    c, t = summary.counts, summary.timing
    print(f"batch {summary.batch_id}: {pb.BatchStatus.Name(summary.status)}; total={c.total} "
          f"succeeded={c.succeeded} failed={c.failed} rejected={c.rejected} pending={c.pending}; "
          f"groups={t.groups} APT={t.average_processing_time.ToMicroseconds() / 1000:.1f} ms "
          f"throughput={t.throughput_items_per_second:,.0f} items/s; results in {args.output}",
          file=sys.stderr)
    return 0 if summary.status == pb.BATCH_STATUS_COMPLETED else 2


def main() -> int:
    parser = argparse.ArgumentParser(description="paygrid batch payments")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="submit (or resume) a CSV / JSON Lines file")
    sub.add_argument("input", type=Path)
    sub.add_argument("--payer", required=True)
    sub.add_argument("--output", type=Path, required=True, help="results, one JSON line per item")
    sub.add_argument("--batch-id", help="default: derived from the file's content")
    sub.add_argument("--target", default="127.0.0.1:50051")
    sub.add_argument("--group-size", type=int, default=0, help="0: the server's default (100)")
    sub.add_argument("--parallelism", type=int, default=0, help="0: the server's default (4)")
    return submit(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
