"""What the CLI prints on stdout: a readable summary and tables (human), or
protobuf JSON from json_format, one object per line (json)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client.batch_files import ITEM_STATUS_NAMES

HUMAN = "human"
JSON = "json"
FORMATS = (HUMAN, JSON)


def enum_name(enum_type, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix)


def failure_text(failure: pb.Failure) -> str:
    if not failure.reason:
        return ""
    code = f" ({failure.decline_code})" if failure.decline_code else ""
    message = f": {failure.message}" if failure.message else ""
    return f"{failure.reason}{code}{message}"


def duration_ms(duration) -> str:
    return f"{duration.ToMicroseconds() / 1000:.1f} ms"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [list(header)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def amounts_text(legs: Iterable[pb.PaymentLeg]) -> str:
    """Total per currency, in minor units: "45000 EUR + 100 USD"."""
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[leg.amount.currency] += leg.amount.amount_minor
    return " + ".join(f"{amount} {currency}" for currency, amount in totals.items())


class Printer:
    def __init__(self, output_format: str, stream: TextIO = sys.stdout) -> None:
        if output_format not in FORMATS:
            raise ValueError(f"output format must be one of {FORMATS}")
        self.is_json = output_format == JSON
        self._stream = stream

    def _line(self, text: str = "") -> None:
        self._stream.write(text + "\n")

    def _json(self, message: Message) -> None:
        self._line(json.dumps(json_format.MessageToDict(message)))

    # -- events -----------------------------------------------------------

    def event(self, event: ev.Event) -> None:
        """One line: the event as JSON (its data decoded), or its position and what changed."""
        if self.is_json:
            return self._json(event)
        self._line(f"{event.seq}  {event.type}  {event.aggregate_type} {event.aggregate_id} "
                   f"v{event.aggregate_version}  {event.time.ToJsonString()}")

    # -- payments ---------------------------------------------------------

    def payment(self, payment: pb.Payment) -> None:
        if self.is_json:
            return self._json(payment)
        timing = payment.timing
        took = (f"   took {duration_ms(timing.processing_time)}"
                if timing.HasField("processing_time") else "")
        self._line(f"payment   {payment.payment_id}  "
                   f"{enum_name(pb.PaymentStatus, payment.status, 'PAYMENT_STATUS_')}")
        self._line(f"payer     {payment.payer}")
        self._line(f"mode      {enum_name(pb.PaymentMode, payment.mode, 'PAYMENT_MODE_')}")
        self._line(f"key       {payment.idempotency_key}")
        self._line(f"received  {timing.received_at.ToJsonString()}{took}")
        if payment.failure.reason:
            self._line(f"failure   {failure_text(payment.failure)}")
        for key, value in sorted(payment.metadata.items()):
            self._line(f"metadata  {key}={value}")
        self._line()
        self._line(table(
            ("LEG", "PAYEE", "AMOUNT_MINOR", "CURRENCY", "CHANNEL", "STATUS", "REFUNDED_MINOR",
             "ATTEMPTS", "DETAIL"),
            ((leg.leg_index, leg.payee, leg.amount.amount_minor, leg.amount.currency,
              leg.channel or "-", enum_name(pb.LegStatus, leg.status, "LEG_STATUS_"),
              leg.refunded_amount_minor, leg.attempts,
              failure_text(leg.failure) or leg.channel_reference)
             for leg in payment.legs)))

    def payments(self, payments: Iterable[pb.Payment]) -> None:
        if self.is_json:
            for payment in payments:
                self._json(payment)
            return
        self._line(table(
            ("PAYMENT_ID", "STATUS", "PAYER", "LEGS", "AMOUNT_MINOR", "RECEIVED", "KEY"),
            ((p.payment_id, enum_name(pb.PaymentStatus, p.status, "PAYMENT_STATUS_"), p.payer,
              len(p.legs), amounts_text(p.legs), p.timing.received_at.ToJsonString(),
              p.idempotency_key) for p in payments)))

    def refund(self, response: pb.RefundPaymentResponse) -> None:
        if self.is_json:
            return self._json(response)
        refund = response.refund
        self._line(f"refund    {refund.refund_id}  "
                   f"{enum_name(pb.RefundStatus, refund.status, 'REFUND_STATUS_')}")
        self._line(f"payment   {refund.payment_id}")
        self._line(f"key       {refund.idempotency_key}")
        if refund.reason:
            self._line(f"reason    {refund.reason}")
        self._line()
        self._line(table(
            ("LEG", "AMOUNT_MINOR", "CURRENCY", "STATUS", "DETAIL"),
            ((leg.leg_index, leg.amount.amount_minor, leg.amount.currency,
              enum_name(pb.RefundStatus, leg.status, "REFUND_STATUS_"),
              failure_text(leg.failure) or leg.channel_reference) for leg in refund.legs)))
        self._line()
        self.payment(response.payment)

    # -- batches ----------------------------------------------------------

    def batch(self, batch: batch_pb.Batch) -> None:
        if self.is_json:
            return self._json(batch)
        self._line(f"batch        {batch.batch_id}  "
                   f"{enum_name(batch_pb.BatchStatus, batch.status, 'BATCH_STATUS_')}")
        self._line(f"payer        {batch.payer}")
        self._line(f"grouping     "
                   f"{enum_name(batch_pb.GroupingPolicy, batch.grouping, 'GROUPING_POLICY_')}")
        self._line(f"submissions  {batch.submissions}")
        self._line(f"items        {counts_text(batch.counts)}")
        self._line(f"timing       {timing_text(batch.timing)}")
        self._line(f"created      {batch.created_at.ToJsonString()}")
        if batch.HasField("completed_at"):
            self._line(f"completed    {batch.completed_at.ToJsonString()}")

    def batch_items(self, items: Iterable[batch_pb.BatchItem]) -> int:
        """Streams the items (a batch may hold millions); returns how many."""
        count = 0
        if not self.is_json:
            self._line(f"{'REFERENCE':<24} {'STATUS':<10} {'PAYEE':<24} {'AMOUNT_MINOR':>14} "
                       f"{'CURRENCY':<8} {'CHANNEL':<14} {'GROUP':>5}  DETAIL")
        for item in items:
            count += 1
            if self.is_json:
                self._json(item)
                continue
            tx, result = item.transaction, item.result
            self._line(f"{tx.reference:<24} {ITEM_STATUS_NAMES[result.status]:<10} "
                       f"{tx.payee:<24} {tx.amount.amount_minor:>14} {tx.amount.currency:<8} "
                       f"{result.channel or '-':<14} {result.group_no:>5}  "
                       f"{failure_text(result.failure) or result.channel_reference}")
        return count

    def batch_summary(self, summary: batch_pb.BatchSummary, results_path: Path) -> None:
        if self.is_json:
            return self._json(summary)
        self._line(f"batch {summary.batch_id}: "
                   f"{enum_name(batch_pb.BatchStatus, summary.status, 'BATCH_STATUS_')}; "
                   f"{counts_text(summary.counts)}; {timing_text(summary.timing)}; "
                   f"results in {results_path}")


def counts_text(counts: batch_pb.BatchCounts) -> str:
    return (f"total={counts.total} succeeded={counts.succeeded} failed={counts.failed} "
            f"rejected={counts.rejected} pending={counts.pending}")


def timing_text(timing: batch_pb.BatchTiming) -> str:
    return (f"groups={timing.groups} APT={duration_ms(timing.average_processing_time)} "
            f"throughput={timing.throughput_items_per_second:,.0f} items/s "
            f"model-throughput={timing.model_throughput_items_per_second:,.0f} items/s "
            f"wall={duration_ms(timing.wall_time)}")
