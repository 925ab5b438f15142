"""Hypothesis strategies for hostile paygrid.v1 requests, shared by
tests/api/test_hostile_input.py (a fast subset) and scripts/fuzz_requests.py
(the long run).

Requests are built from the proto descriptors, so every field of every
request message gets values (a field added to a proto is covered at once;
test_every_request_field_gets_values proves it): generic hostile values by
type, and for the fields whose meaning matters (amounts, currencies, keys,
ids, references) a mix of valid-looking and hostile values, so both the
accepting and the refusing paths of the server are exercised.

`malformed_bytes` makes bytes that are not a valid encoding of the request
(or are, with surprises: unknown fields), for generic calls that bypass the
client's serializer.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pay_pb
from paygrid_server.domain.model import limits

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# Simulator payees that make a charge hang (see simulator/payee_test_values.py):
# hostile for the server too, but each costs a channel timeout, so left to
# the tests made for them.
SLOW_PAYEE_PREFIXES = ("timeout_", "hang_after_charge_")

PAYABLE_CURRENCIES = ("USD", "EUR", "JPY", "KWD", "GBP", "CHF")
NOT_PAYABLE_CURRENCIES = ("", "usd", "XYZ", "XAU", "XXX", "EURO", "EU", "€", "US D", "USD\x00",
                          "ＵＳＤ")
CHANNELS = ("card", "wallet", "bank_transfer")


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: type[Message]
    request_streaming: bool = False
    response_streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _methods() -> tuple[Method, ...]:
    found = []
    for module in (pay_pb, batch_pb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(Method(service.full_name, method.name,
                                    GetMessageClass(method.input_type),
                                    method.client_streaming, method.server_streaming))
    return tuple(found)


# Every paygrid.v1 method, read from the protos.
METHODS: tuple[Method, ...] = _methods()
METHODS_BY_NAME = {m.name: m for m in METHODS}


@dataclass
class Known:
    """Ids the server has, so requests name real resources as well as made-up ones."""
    payment_ids: list[str] = field(default_factory=lambda: ["pay_0000"])
    batch_ids: list[str] = field(default_factory=lambda: ["batch-0000"])
    # Fresh ids: a counter rather than drawn randomness, so "new" is really new.
    _fresh: itertools.count = field(default_factory=itertools.count)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def fresh(self, prefix: str) -> str:
        # Fixed width: a drawn value's size must not depend on state outside
        # the draw (Hypothesis checks that generation is reproducible).
        return f"{prefix}-{self.run_id}-{next(self._fresh):08d}"

    def learn(self, method_name: str, payloads: list[bytes], responses: list[bytes]) -> None:
        """Ids from a call that succeeded, for later requests to name."""
        if method_name == "Pay" and responses:
            payment_id = pay_pb.PayResponse.FromString(responses[0]).payment.payment_id
            if payment_id not in self.payment_ids:
                self.payment_ids.append(payment_id)
        elif method_name == "SubmitBatch" and payloads:
            try:
                first = batch_pb.SubmitBatchRequest.FromString(payloads[0])
            except Exception:  # noqa: BLE001 - raw bytes may not parse
                return
            if first.header.batch_id and first.header.batch_id not in self.batch_ids:
                self.batch_ids.append(first.header.batch_id)


def _one_of_list(ids: list[str]) -> st.SearchStrategy[str]:
    """One of a list that grows while the strategy is in use."""
    return st.integers(0, 2**16).map(lambda i: ids[i % len(ids)])


# -- text -------------------------------------------------------------------

CONTROL_CHARS = st.one_of(st.characters(min_codepoint=0, max_codepoint=31),
                          st.sampled_from(["\x7f", "\x85", "\u2028", "\u2029", "\u200b",
                                           "\ufeff", "\u202e", "\ue000"]))
ODD_STRINGS = ("", " ", "\x00", "\t", "null", "None", "' OR 1=1 --", "%s%s%n", "../../etc/passwd",
               "😀" * 20, "e\u0301" * 30, "\u202eevil", "Ａ" * 10, "\\", "\"", "${jndi:x}",
               "pay_", "pay_../x", "-1", "0", "9" * 40)


def hostile_text(max_chars: int) -> st.SearchStrategy[str]:
    """Empty, at and past the limit, unicode, control characters, oddities."""
    return st.one_of(
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=24),  # any unicode but surrogates (not encodable)
        st.tuples(st.text(max_size=6), CONTROL_CHARS, st.text(max_size=6)).map("".join),
        st.integers(max(0, max_chars - 1), max_chars + 2).map(lambda n: "x" * n),
        st.sampled_from([max_chars * 4, 10_000]).map(lambda n: "é" * n),
    )


def plain_id(prefix: str = "") -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z0-9_\-]{1,24}", fullmatch=True).map(lambda s: prefix + s)


def printable_key() -> st.SearchStrategy[str]:
    """Printable ASCII without spaces: what idempotency keys and batch ids accept."""
    return st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                   min_size=1, max_size=48)


def not_slow(payee: str) -> bool:
    return not payee.startswith(SLOW_PAYEE_PREFIXES)


# -- numbers ----------------------------------------------------------------

def hostile_int(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    lo, hi = bounds
    edges = sorted({lo, lo + 1, hi - 1, hi, 0, 1, *((-1,) if lo < 0 else ())})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(max(lo, -5), 2_000))


def amount_minor() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(1, 1_000_000),
        st.sampled_from([0, -1, limits.MAX_AMOUNT_MINOR, limits.MAX_AMOUNT_MINOR + 1, *INT64]),
        st.integers(*INT64),
    )


def unknown_enum(descriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in descriptor.values]
    return st.one_of(st.sampled_from(known),
                     st.sampled_from([-1, max(known) + 1, 99, *INT32]),
                     st.integers(*INT32))


# -- fields by meaning ------------------------------------------------------
# Keyed by full field name; any field not listed gets a generic strategy by
# type (see _value_strategy).

def field_overrides(known: Known) -> dict[str, Callable[[], st.SearchStrategy]]:
    def payee():
        return st.one_of(plain_id("merchant_"), plain_id("decline_"),
                         hostile_text(limits.PARTY_ID_MAX_CHARS)).filter(not_slow)

    def idempotency_key():
        return st.one_of(st.sampled_from(["key-1", "key-2", "key-3"]),  # replays, conflicts
                         st.builds(lambda: known.fresh("key")), printable_key(),
                         hostile_text(limits.IDEMPOTENCY_KEY_MAX_CHARS))

    def payment_id():
        return st.one_of(_one_of_list(known.payment_ids), plain_id("pay_"),
                         hostile_text(limits.PAYMENT_ID_MAX_CHARS))

    def batch_id():
        return st.one_of(_one_of_list(known.batch_ids), st.builds(lambda: known.fresh("b")),
                         printable_key(), hostile_text(limits.BATCH_ID_MAX_CHARS))

    def channel():
        return st.one_of(st.just(""), st.sampled_from(CHANNELS), hostile_text(64))

    def batch_reference():
        return st.one_of(st.sampled_from(["r1", "r2", "r3"]),  # duplicates
                         st.builds(lambda: known.fresh("r")),
                         hostile_text(limits.BATCH_REFERENCE_MAX_CHARS))

    def page_token():
        import base64
        import json
        payloads = st.one_of(
            st.tuples(hostile_int(INT64), st.text(max_size=10)).map(list),
            st.tuples(st.sampled_from([10**30, -(10**30), 2**63, 1.5, True, None, "1"]),
                      st.sampled_from(["pay_x", "", None, 5])).map(list),
            st.sampled_from([{}, [], [1], [1, 2, 3], "x", 7]),
        )
        return st.one_of(
            hostile_text(limits.PAGE_TOKEN_MAX_CHARS),
            payloads.map(lambda p: base64.urlsafe_b64encode(json.dumps(p).encode()).decode()),
            st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        )

    return {
        "paygrid.type.v1.Money.currency": lambda: st.one_of(
            st.sampled_from(PAYABLE_CURRENCIES), st.sampled_from(NOT_PAYABLE_CURRENCIES),
            st.text(max_size=5)),
        "paygrid.type.v1.Money.amount_minor": amount_minor,
        "paygrid.type.v1.Money.minor_units": lambda: st.one_of(
            st.sampled_from([0, 2, 3]), hostile_int(UINT32)),
        "paygrid.v1.PayRequest.idempotency_key": idempotency_key,
        "paygrid.v1.PayRequest.payer": lambda: st.one_of(
            plain_id("acct_"), hostile_text(limits.PARTY_ID_MAX_CHARS)),
        "paygrid.v1.PayLeg.payee": payee,
        "paygrid.v1.PayLeg.channel": channel,
        "paygrid.v1.PayLeg.reference": lambda: st.one_of(
            st.sampled_from(["inv-1", "inv-1", "inv-2"]), hostile_text(limits.REFERENCE_MAX_CHARS)),
        "paygrid.v1.GetPaymentRequest.payment_id": payment_id,
        "paygrid.v1.ListPaymentsRequest.page_size": lambda: st.one_of(
            st.integers(0, limits.LIST_PAGE_SIZE_MAX + 1), hostile_int(INT32)),
        "paygrid.v1.ListPaymentsRequest.page_token": page_token,
        "paygrid.v1.RefundPaymentRequest.payment_id": payment_id,
        "paygrid.v1.RefundPaymentRequest.idempotency_key": idempotency_key,
        "paygrid.v1.RefundPaymentRequest.reason": lambda: st.one_of(
            st.just("customer request"), hostile_text(limits.REFERENCE_MAX_CHARS)),
        "paygrid.v1.RefundLeg.leg_index": lambda: st.one_of(
            st.integers(0, 3), hostile_int(UINT32)),
        "paygrid.v1.BatchHeader.batch_id": batch_id,
        "paygrid.v1.BatchHeader.payer": lambda: st.one_of(
            plain_id("acct_"), hostile_text(limits.PARTY_ID_MAX_CHARS)),
        "paygrid.v1.BatchHeader.max_group_size": lambda: st.one_of(
            st.integers(0, limits.BATCH_MAX_GROUP_SIZE + 1), hostile_int(UINT32)),
        "paygrid.v1.BatchHeader.parallelism": lambda: st.one_of(
            st.integers(0, limits.BATCH_MAX_PARALLELISM + 1), hostile_int(UINT32)),
        "paygrid.v1.BatchHeader.control_item_count": lambda: st.one_of(
            st.integers(0, 12), hostile_int(UINT32)),
        "paygrid.v1.BatchHeader.control_sum": lambda: st.one_of(
            st.sampled_from(["1", "0", "0.01", "12.50", "1e3", "-1", "1.", ".5", "1,5", "١٢",
                             "9" * 19, "0." + "1" * 18, "NaN", "Infinity"]),
            st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
            hostile_text(40)),
        "paygrid.v1.BatchTransaction.reference": batch_reference,
        "paygrid.v1.BatchTransaction.payee": payee,
        "paygrid.v1.BatchTransaction.channel": channel,
        "paygrid.v1.GetBatchRequest.batch_id": batch_id,
        "paygrid.v1.ListBatchItemsRequest.batch_id": batch_id,
        "google.protobuf.Timestamp.seconds": lambda: st.one_of(
            st.integers(0, 4_102_444_800), hostile_int(INT64)),
        "google.protobuf.Timestamp.nanos": lambda: st.one_of(
            st.integers(0, 999_999_999), hostile_int(INT32)),
    }


def valid_fields(known: Known) -> dict[str, Callable[[], st.SearchStrategy]]:
    """Values the server accepts, for the fields that need one; any other
    field is left unset (its default is valid)."""
    def money():
        return st.builds(lambda c, a: GetMessageClass(
            pay_pb.PayLeg.DESCRIPTOR.fields_by_name["amount"].message_type)(
            currency=c, amount_minor=a), st.sampled_from(["USD", "EUR"]), st.integers(1, 100_000))

    def ascii_text():
        return st.from_regex(r"[A-Za-z0-9 _\-]{0,20}", fullmatch=True)

    return {
        "paygrid.v1.PayRequest.idempotency_key": lambda: st.one_of(
            st.builds(lambda: known.fresh("key")), st.sampled_from(["key-1", "key-2"])),
        "paygrid.v1.PayRequest.payer": lambda: plain_id("acct_"),
        "paygrid.v1.PayRequest.legs": lambda: st.lists(st.builds(
            lambda payee, amount, channel, reference: pay_pb.PayLeg(
                payee=payee, amount=amount, channel=channel, reference=reference),
            st.one_of(plain_id("merchant_"), plain_id("decline_")), money(),
            st.sampled_from(["", "", "card"]), ascii_text()), min_size=1, max_size=3),
        "paygrid.v1.PayRequest.mode": lambda: st.sampled_from([0, 1, 2]),
        "paygrid.v1.PayRequest.wait": lambda: st.sampled_from([0, 1, 2]),
        "paygrid.v1.PayRequest.metadata": lambda: st.dictionaries(
            plain_id(), ascii_text(), max_size=3),
        "paygrid.v1.GetPaymentRequest.payment_id": lambda: _one_of_list(known.payment_ids),
        "paygrid.v1.ListPaymentsRequest.page_size": lambda: st.integers(0, 100),
        "paygrid.v1.RefundPaymentRequest.payment_id": lambda: _one_of_list(known.payment_ids),
        "paygrid.v1.RefundPaymentRequest.idempotency_key": lambda: st.builds(
            lambda: known.fresh("refund")),
        "paygrid.v1.RefundPaymentRequest.legs": lambda: st.lists(st.builds(
            lambda index, amount: pay_pb.RefundLeg(leg_index=index, amount=amount),
            st.integers(0, 2), st.none() | st.builds(
                lambda a: GetMessageClass(pay_pb.RefundLeg.DESCRIPTOR.fields_by_name[
                    "amount"].message_type)(currency="USD", amount_minor=a),
                st.integers(1, 500))), max_size=2, unique_by=lambda leg: leg.leg_index),
        "paygrid.v1.RefundPaymentRequest.reason": ascii_text,
        "paygrid.v1.BatchHeader.batch_id": lambda: st.builds(lambda: known.fresh("b")),
        "paygrid.v1.BatchHeader.payer": lambda: plain_id("acct_"),
        "paygrid.v1.BatchHeader.grouping": lambda: st.sampled_from([0, 1, 2, 3]),
        "paygrid.v1.BatchHeader.max_group_size": lambda: st.integers(0, 1000),
        "paygrid.v1.BatchHeader.parallelism": lambda: st.integers(0, 16),
        "paygrid.v1.BatchTransaction.reference": lambda: st.builds(lambda: known.fresh("r")),
        "paygrid.v1.BatchTransaction.payee": lambda: plain_id("payee_"),
        "paygrid.v1.BatchTransaction.amount": money,
        "paygrid.v1.GetBatchRequest.batch_id": lambda: _one_of_list(known.batch_ids),
        "paygrid.v1.ListBatchItemsRequest.batch_id": lambda: _one_of_list(known.batch_ids),
        "paygrid.v1.ListBatchItemsRequest.status": lambda: st.integers(0, 6),
    }


# Repeated fields: list sizes, from none to past the limits.
def _list_sizes(full_name: str) -> tuple[int, int, int]:
    """(usual max, past-the-limit min, past-the-limit max)"""
    if full_name in ("paygrid.v1.PayRequest.legs", "paygrid.v1.RefundPaymentRequest.legs"):
        return 3, limits.MAX_LEGS_PER_PAYMENT, limits.MAX_LEGS_PER_PAYMENT + 2
    if full_name == "paygrid.v1.PayRequest.metadata":
        return 3, limits.METADATA_MAX_ENTRIES, limits.METADATA_MAX_ENTRIES + 2
    return 4, 0, 0


def _scalar_strategy(fd: FieldDescriptor) -> st.SearchStrategy:
    t = FieldDescriptor
    if fd.type == t.TYPE_STRING:
        return hostile_text(128)
    if fd.type == t.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == t.TYPE_BOOL:
        return st.booleans()
    if fd.type == t.TYPE_ENUM:
        return unknown_enum(fd.enum_type)
    if fd.type in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return hostile_int(INT32)
    if fd.type in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return hostile_int(INT64)
    if fd.type in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return hostile_int(UINT32)
    if fd.type in (t.TYPE_UINT64, t.TYPE_FIXED64):
        return hostile_int(UINT64)
    if fd.type in (t.TYPE_DOUBLE, t.TYPE_FLOAT):
        return st.floats(width=32 if fd.type == t.TYPE_FLOAT else 64)
    raise AssertionError(f"no strategy for {fd.full_name} of type {fd.type}")


class RequestStrategies:
    """Strategies for request messages, built once per descriptor."""

    def __init__(self, known: Known | None = None) -> None:
        self.known = known or Known()
        self._overrides = field_overrides(self.known)
        self._valid = valid_fields(self.known)
        self._cache: dict[str, st.SearchStrategy] = {}

    def message(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        if descriptor.full_name not in self._cache:
            # deferred: messages may refer to themselves
            self._cache[descriptor.full_name] = st.deferred(lambda: self._build(descriptor))
        return self._cache[descriptor.full_name]

    def value(self, fd: FieldDescriptor) -> st.SearchStrategy:
        """Values of one field (a list or dict for repeated and map fields)."""
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd, value_fd = (fd.message_type.fields_by_name[n] for n in ("key", "value"))
            usual, past_min, past_max = _list_sizes(fd.full_name)
            keys, values = self._single(key_fd), self._single(value_fd)
            maps = st.dictionaries(keys, values, max_size=usual)
            if past_max:
                maps |= st.dictionaries(st.builds(lambda i: f"k{i}", st.integers(0, 10**6)),
                                        st.just("v"), min_size=past_min, max_size=past_max)
            return maps
        if fd.is_repeated:
            usual, past_min, past_max = _list_sizes(fd.full_name)
            lists = st.lists(self._single(fd), max_size=usual)
            if past_max:
                # Past the limit: copies of one element, cheap to draw.
                lists |= st.tuples(self._single(fd), st.integers(past_min, past_max)).map(
                    lambda pair: [pair[0]] * pair[1])
            return lists
        return self._single(fd)

    def _single(self, fd: FieldDescriptor) -> st.SearchStrategy:
        override = self._overrides.get(fd.full_name)
        if override is not None:
            return override()
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(fd.message_type)
        return _scalar_strategy(fd)

    def _build(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        cls = GetMessageClass(descriptor)
        plain = [fd for fd in descriptor.fields
                 if fd.containing_oneof is None or fd.containing_oneof.name.startswith("_")]
        oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]
        parts = {fd.name: st.none() | self.value(fd) for fd in plain}
        for oneof in oneofs:
            choices = [st.tuples(st.just(fd.name), self.value(fd)) for fd in oneof.fields]
            parts[f"oneof:{oneof.name}"] = st.none() | st.one_of(choices)
        return st.fixed_dictionaries(parts).map(lambda values: _make(cls, values))

    def valid(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        """A message the server accepts (as far as its fields go)."""
        key = f"valid:{descriptor.full_name}"
        if key not in self._cache:
            cls = GetMessageClass(descriptor)
            parts = {fd.name: self._valid[fd.full_name]() for fd in descriptor.fields
                     if fd.full_name in self._valid}
            self._cache[key] = st.fixed_dictionaries(parts).map(lambda v: _make(cls, v))
        return self._cache[key]

    def request(self, method: Method) -> st.SearchStrategy[Message]:
        """Hostile in every field; valid; or valid but for one field (at any
        depth), so both refusals and the paths behind validation are reached."""
        if method.name == "SubmitBatch":
            raise ValueError("SubmitBatch takes a stream: use batch_stream()")
        descriptor = method.request.DESCRIPTOR
        hostile, valid = self.message(descriptor), self.valid(descriptor)
        spliced = st.builds(_splice, valid, hostile, st.randoms(use_true_random=False))
        return st.one_of(hostile, valid, spliced, spliced)

    def _mixed(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        hostile, valid = self.message(descriptor), self.valid(descriptor)
        return st.one_of(valid, valid, st.builds(_splice, valid, hostile,
                                                 st.randoms(use_true_random=False)), hostile)

    def batch_stream(self) -> st.SearchStrategy[list[Message]]:
        """SubmitBatch streams: usually a header then chunks; sometimes no
        header, a header again, an empty message or a chunk past the limit."""
        header = self._header_message()
        chunk = self._chunk_message()
        anything = self.message(batch_pb.SubmitBatchRequest.DESCRIPTOR)
        oversize = st.builds(lambda tx: batch_pb.SubmitBatchRequest(
            transactions=batch_pb.BatchTransactions(
                transactions=[tx] * (limits.BATCH_MAX_ITEMS_PER_MESSAGE + 1))),
            self.message(batch_pb.BatchTransaction.DESCRIPTOR))
        first = st.one_of(header, header, header, anything)
        later = st.one_of(chunk, chunk, chunk, chunk, chunk, chunk, chunk, chunk, anything,
                          header, oversize, st.just(batch_pb.SubmitBatchRequest()))
        return st.tuples(first, st.lists(later, max_size=3)).map(lambda p: [p[0], *p[1]])

    def _header_message(self) -> st.SearchStrategy[Message]:
        return self._mixed(batch_pb.BatchHeader.DESCRIPTOR).map(
            lambda h: batch_pb.SubmitBatchRequest(header=h))

    def _chunk_message(self) -> st.SearchStrategy[Message]:
        tx = self._mixed(batch_pb.BatchTransaction.DESCRIPTOR)
        return st.lists(tx, min_size=1, max_size=6).map(
            lambda txs: batch_pb.SubmitBatchRequest(
                transactions=batch_pb.BatchTransactions(transactions=txs)))


def _splice(valid: Message, hostile: Message, random) -> Message:
    """`valid` with one field, at some depth, taken from `hostile`."""
    result = type(valid)()
    result.CopyFrom(valid)
    target, source = result, hostile
    while True:
        fd = random.choice(target.DESCRIPTOR.fields)
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if fd.message_type is not None and not is_map and random.random() < 0.6:
            if fd.is_repeated and len(getattr(target, fd.name)) and len(getattr(source, fd.name)):
                target, source = getattr(target, fd.name)[0], getattr(source, fd.name)[0]
                continue
            if not fd.is_repeated and target.HasField(fd.name) and source.HasField(fd.name):
                target, source = getattr(target, fd.name), getattr(source, fd.name)
                continue
        if fd.is_repeated or fd.message_type is not None or fd.has_presence:
            target.ClearField(fd.name)
        if fd.is_repeated:
            if is_map:
                getattr(target, fd.name).MergeFrom(getattr(source, fd.name))
            else:
                getattr(target, fd.name).extend(getattr(source, fd.name))
        elif fd.message_type is not None:
            if source.HasField(fd.name):
                getattr(target, fd.name).CopyFrom(getattr(source, fd.name))
        elif not fd.has_presence or source.HasField(fd.name):
            setattr(target, fd.name, getattr(source, fd.name))
        return result


def _make(cls: type[Message], values: dict) -> Message:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        if name.startswith("oneof:"):
            name, value = value
        _set(message, name, value)
    return message


def _set(message: Message, name: str, value) -> None:
    fd = message.DESCRIPTOR.fields_by_name[name]
    target = getattr(message, name) if fd.is_repeated else None
    if isinstance(value, dict):
        if fd.message_type.fields_by_name["value"].message_type is None:
            target.update(value)
        else:
            for k, v in value.items():
                target[k].CopyFrom(v)
    elif isinstance(value, list):
        target.extend(value)
    elif isinstance(value, Message):
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def requests_for(method: Method, strategies: RequestStrategies) -> st.SearchStrategy[list[Message]]:
    """What one call sends: one message, or a stream of them."""
    if method.request_streaming:
        return strategies.batch_stream()
    return strategies.request(method).map(lambda m: [m])


# -- malformed bytes --------------------------------------------------------

def varint(value: int) -> bytes:
    value &= 2**64 - 1  # negative numbers go on the wire as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"abc\xe2\x82", b"\x80")
_WIRE_BY_TYPE = {FieldDescriptor.TYPE_DOUBLE: 1, FieldDescriptor.TYPE_FIXED64: 1,
                 FieldDescriptor.TYPE_SFIXED64: 1, FieldDescriptor.TYPE_FLOAT: 5,
                 FieldDescriptor.TYPE_FIXED32: 5, FieldDescriptor.TYPE_SFIXED32: 5,
                 FieldDescriptor.TYPE_STRING: 2, FieldDescriptor.TYPE_BYTES: 2,
                 FieldDescriptor.TYPE_MESSAGE: 2}


def _field_chains(descriptor: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every path of fields from the request down to a scalar, 4 levels at most."""
    chains = []
    for fd in descriptor.fields:
        chains.append((fd,))
        if fd.message_type is not None and depth < 4:
            chains += [(fd, *rest) for rest in _field_chains(fd.message_type, depth + 1)]
    return chains


def _nest(chain: tuple[FieldDescriptor, ...], innermost: bytes) -> bytes:
    """`innermost` (a field's encoding) wrapped in the messages of `chain[:-1]`."""
    data = innermost
    for fd in reversed(chain[:-1]):
        data = length_delimited(fd.number, data)
    return data


def malformed_bytes(message_class: type[Message],
                    valid: st.SearchStrategy[Message] | None = None) -> st.SearchStrategy[bytes]:
    """Bytes that are not (or not quite) a valid `message_class`."""
    descriptor = message_class.DESCRIPTOR
    chains = _field_chains(descriptor)
    string_chains = [c for c in chains if c[-1].type == FieldDescriptor.TYPE_STRING]
    valid_bytes = (valid if valid is not None else st.just(message_class())).map(
        lambda m: m.SerializeToString())
    chain = st.sampled_from(chains)

    def wrong_wire(c, wire):
        fd = c[-1]
        expected = _WIRE_BY_TYPE.get(fd.type, 0)
        wire = wire if wire != expected else (expected + 1) % 6
        payload = {0: varint(7), 1: b"\x01" * 8, 2: varint(3) + b"abc", 3: tag(fd.number, 4),
                   4: b"", 5: b"\x01" * 4}[wire]
        return _nest(c, tag(fd.number, wire) + payload)

    kinds = [
        st.binary(max_size=64),
        # a valid message cut short
        st.tuples(valid_bytes, st.integers(1, 2**16)).map(
            lambda p: p[0][:1 + p[1] % (len(p[0]) - 1)] if len(p[0]) > 1 else b"\x0a"),
        # a field sent with another wire type than its own
        st.builds(wrong_wire, chain, st.sampled_from([0, 1, 2, 3, 4, 5])),
        # a varint of 11 bytes (at most 10 are allowed)
        st.builds(lambda c: _nest(c, tag(c[-1].number, 0) + b"\xff" * 10 + b"\x01"), chain),
        # a length prefix far past the end
        st.builds(lambda c, n: _nest(c, tag(c[-1].number, 2) + varint(n) + b"ab"), chain,
                  st.sampled_from([3, 2**31 - 1, 2**32, 2**63, 2**64 - 1])),
        # field number 0, wire types 6 and 7, a lone end-group, an unclosed group
        st.sampled_from([b"\x00\x01", b"\x0e", b"\x0f\x00", b"\x0c", b"\x0b\x08\x01",
                         tag(2**29 - 1, 3) + b"\x08\x01", b"\x80" * 5]),
        # valid, with unknown fields of every wire type appended (must parse)
        st.tuples(valid_bytes, st.lists(st.tuples(st.integers(16, 2**29 - 1),
                                                  st.sampled_from([0, 1, 2, 5])), max_size=3)).map(
            lambda p: p[0] + b"".join(
                tag(n, w) + {0: varint(1), 1: b"\x00" * 8, 2: varint(1) + b"z", 5: b"\x00" * 4}[w]
                for n, w in p[1])),
        # a valid message with garbage after it
        st.tuples(valid_bytes, st.binary(min_size=1, max_size=16)).map(lambda p: p[0] + p[1]),
        # deep nesting of unknown fields and groups (protobuf's limit is 100 levels)
        st.tuples(st.integers(50, 130), st.booleans()).map(lambda p: _deep(*p)),
    ]
    if string_chains:
        kinds.append(st.builds(  # invalid UTF-8 in a string field, at any depth
            lambda c, bad: _nest(c, length_delimited(c[-1].number, bad)),
            st.sampled_from(string_chains), st.sampled_from(INVALID_UTF8)))
    message_chains = [c for c in chains if c[-1].type == FieldDescriptor.TYPE_MESSAGE]
    if message_chains:
        kinds.append(st.builds(  # garbage inside a nested message
            lambda c, junk: _nest(c, length_delimited(c[-1].number, junk)),
            st.sampled_from(message_chains), st.binary(min_size=1, max_size=24)))
    return st.one_of(kinds)


def _deep(depth: int, groups: bool) -> bytes:
    if groups:
        return tag(1000, 3) * depth + tag(1000, 4) * depth
    data = b""
    for _ in range(depth):
        data = length_delimited(1000, data)
    return data


def every_request_field() -> set[str]:
    """Full names of every field reachable from a paygrid.v1 request."""
    names: set[str] = set()

    def walk(descriptor: Descriptor) -> None:
        for fd in descriptor.fields:
            if fd.full_name in names:
                continue
            names.add(fd.full_name)
            if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
                walk(fd.message_type)

    for method in METHODS:
        walk(method.request.DESCRIPTOR)
    return names
