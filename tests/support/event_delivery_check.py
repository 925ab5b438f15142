"""Did every consumer get every event, in order, with the right payload?

A consumer (WatchEvents, or a queue of the RabbitMQ relay) appends one
`Delivery` per event it was handed to a JSON-lines file, before it moves its
cursor or acks. After the run, `check_deliveries` compares that file with
the server's final state (`FinalState`, from GetPayment / GetBatch) and, for
consumers that see `seq`, with ListEvents from 0:

- lost: per aggregate, the de-duplicated versions are not exactly
  1..final version (one missing, or one beyond what the server holds);
- out of order: a version delivered for the first time after a higher one
  of the same aggregate;
- stale: the highest version's payload is not the final state (sha256 of
  the whole message, deterministic encoding; status and version named);
- seq gaps: a seq ListEvents lists that the consumer never got, or first
  deliveries whose seqs go down (a resumed watch must continue past its cursor).

Duplicates (an event delivered again, e.g. after a consumer restarted from
an older saved cursor) are counted, never failed: delivery is at least once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pay_pb

# The snapshots an event carries (its `data`), by full name.
PAYLOADS: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls for cls in (pay_pb.Payment, pay_pb.Refund, batch_pb.Batch)}


@dataclass(frozen=True)
class Payload:
    """What a snapshot is, without keeping it: its type, a digest of the whole
    message, its status by name."""
    type: str
    sha256: str
    status: str

    @classmethod
    def of(cls, message: Message) -> "Payload":
        status_field = message.DESCRIPTOR.fields_by_name["status"]
        return cls(message.DESCRIPTOR.full_name,
                   hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest(),
                   status_field.enum_type.values_by_number[message.status].name)

    @classmethod
    def of_any(cls, data: Any) -> "Payload":
        name = data.TypeName()
        if name not in PAYLOADS:
            return cls(name, hashlib.sha256(data.value).hexdigest(), "")
        message = PAYLOADS[name]()
        data.Unpack(message)
        return cls.of(message)


@dataclass(frozen=True)
class Delivery:
    """One event as a consumer received it; `seq` 0 when the consumer does
    not see the log's seq; `session` counts its connections."""
    consumer: str
    session: int
    seq: int
    event_id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    payload: Payload

    @property
    def aggregate(self) -> tuple[str, str]:
        return self.aggregate_type, self.aggregate_id

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "Delivery":
        fields = json.loads(line)
        return cls(**{**fields, "payload": Payload(**fields["payload"])})


class DeliveryLog:
    """Appends deliveries to a file, each on disk (fsync) before append()
    returns: the consumer moves its cursor (or acks) only after that."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def append(self, delivery: Delivery) -> None:
        self._file.write(delivery.to_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_deliveries(path: Path) -> list[Delivery]:
    return [Delivery.from_json(line) for line in path.read_text().splitlines() if line]


@dataclass(frozen=True)
class FinalState:
    """An aggregate as the server holds it after the run: its version and
    the snapshot its last event must carry."""
    aggregate: tuple[str, str]  # (aggregate_type, aggregate_id), as Delivery.aggregate
    version: int
    payload: Payload


@dataclass
class DeliveryVerdict:
    consumers: int = 0
    deliveries: int = 0
    events: int = 0  # distinct event ids delivered
    aggregates: int = 0
    duplicates: int = 0  # deliveries of an event already delivered to that consumer
    by_consumer: dict[str, int] = field(default_factory=dict)  # deliveries, per consumer
    lost: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    seq_gaps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything else inconsistent

    FAILURES = ("lost", "out_of_order", "stale", "seq_gaps", "problems")

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.FAILURES)

    def describe(self, limit: int = 10) -> str:
        per = ", ".join(f"{name} {n:,}" for name, n in sorted(self.by_consumer.items()))
        lines = [f"{self.consumers} consumers, {self.deliveries:,} deliveries ({per}) of "
                 f"{self.events:,} events over {self.aggregates:,} aggregates: "
                 + ", ".join(f"{name} {len(getattr(self, name))}" for name in self.FAILURES)
                 + f", duplicates {self.duplicates}"]
        for name in self.FAILURES:
            lines += [f"  {name}: {line}" for line in getattr(self, name)[:limit]]
        return "\n".join(lines)


def check_deliveries(deliveries: Iterable[Delivery], finals: Iterable[FinalState],
                     listed_seqs: Mapping[int, str] | None = None) -> DeliveryVerdict:
    """`listed_seqs`: seq -> event_id of every event ListEvents lists from 0,
    checked against each consumer that records seqs."""
    verdict = DeliveryVerdict()
    by_consumer: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_consumer[delivery.consumer].append(delivery)
    final_by_aggregate = {final.aggregate: final for final in finals}
    verdict.consumers = len(by_consumer)
    verdict.aggregates = len(final_by_aggregate)
    events: set[str] = set()
    for consumer, received in by_consumer.items():
        verdict.deliveries += len(received)
        verdict.by_consumer[consumer] = len(received)
        events.update(d.event_id for d in received)
        firsts = _first_deliveries(consumer, received, verdict)
        _check_aggregates(consumer, firsts, final_by_aggregate, verdict)
        if listed_seqs is not None and any(d.seq for d in firsts):
            _check_seqs(consumer, firsts, listed_seqs, verdict)
    verdict.events = len(events)
    return verdict


def _first_deliveries(consumer: str, received: list[Delivery],
                      verdict: DeliveryVerdict) -> list[Delivery]:
    """Each event's first delivery, in arrival order; a later one is a
    duplicate and must be the same event."""
    first: dict[str, Delivery] = {}
    for delivery in received:
        seen = first.get(delivery.event_id)
        if seen is None:
            first[delivery.event_id] = delivery
            continue
        verdict.duplicates += 1
        if replace(delivery, session=seen.session) != seen:
            verdict.problems.append(f"{consumer}: event {delivery.event_id} delivered again "
                                    f"with other contents")
    return list(first.values())


def _check_aggregates(consumer: str, firsts: list[Delivery],
                      finals: Mapping[tuple[str, str], FinalState],
                      verdict: DeliveryVerdict) -> None:
    versions: dict[tuple[str, str], dict[int, Delivery]] = defaultdict(dict)
    for delivery in firsts:
        seen = versions[delivery.aggregate]
        name = "/".join(delivery.aggregate)
        if delivery.version in seen:
            verdict.problems.append(f"{consumer}: {name} version {delivery.version} carried by "
                                    f"two events ({seen[delivery.version].event_id}, "
                                    f"{delivery.event_id})")
            continue
        if seen and delivery.version < max(seen):
            verdict.out_of_order.append(f"{consumer}: {name} version {delivery.version} "
                                        f"first delivered after version {max(seen)}")
        seen[delivery.version] = delivery
    for aggregate in sorted(set(versions) | set(finals)):
        name = "/".join(aggregate)
        final = finals.get(aggregate)
        got = versions.get(aggregate, {})
        if final is None:
            verdict.problems.append(f"{consumer}: {name}: delivered, but the server has no "
                                    f"such aggregate")
            continue
        expected = set(range(1, final.version + 1))
        missing, extra = sorted(expected - set(got)), sorted(set(got) - expected)
        if missing or extra:
            verdict.lost.append(f"{consumer}: {name} (final version {final.version}): "
                                f"missing {_ranges(missing)}, beyond final {_ranges(extra)}")
        last = got.get(final.version)
        if last is not None and last.payload != final.payload:
            verdict.stale.append(
                f"{consumer}: {name} version {final.version}: delivered {last.payload.type} "
                f"{last.payload.status} {last.payload.sha256[:12]}, the server holds "
                f"{final.payload.type} {final.payload.status} {final.payload.sha256[:12]}")


def _check_seqs(consumer: str, firsts: list[Delivery], listed: Mapping[int, str],
                verdict: DeliveryVerdict) -> None:
    previous = 0
    for delivery in firsts:
        if delivery.seq <= previous:
            verdict.seq_gaps.append(f"{consumer}: seq {delivery.seq} first delivered after "
                                    f"seq {previous} (session {delivery.session})")
        previous = max(previous, delivery.seq)
        if listed.get(delivery.seq, delivery.event_id) != delivery.event_id:
            verdict.problems.append(f"{consumer}: seq {delivery.seq} is event "
                                    f"{listed[delivery.seq]}, delivered as {delivery.event_id}")
    delivered = {d.seq for d in firsts}
    missing = sorted(set(listed) - delivered)
    if missing:
        verdict.seq_gaps.append(f"{consumer}: {len(missing)} seqs ListEvents lists were never "
                                f"delivered: {_ranges(missing)}")
    unlisted = sorted(delivered - set(listed))
    if unlisted:
        verdict.problems.append(f"{consumer}: seqs delivered that ListEvents does not list: "
                                f"{_ranges(unlisted)}")


def _ranges(numbers: list[int], limit: int = 8) -> str:
    """[1, 2, 3, 7] as "1-3, 7"."""
    if not numbers:
        return "none"
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    return ", ".join(shown) + (f", ... ({len(runs) - limit} more runs)" if len(runs) > limit else "")
