"""The fingerprint of a batch item's content, as its content digest takes it.

Only PostgreSQL still stores the digest (nothing reads it: items are compared
by their columns, storage/batch_item_ingest.py), for replicas of releases
before migration 0013 during a rolling update; SQLite dropped it."""

from __future__ import annotations

import hashlib
from json.encoder import encode_basestring


def content_fingerprint(payee: str, currency: str, amount_minor: int, requested_channel: str,
                        requested_at_us: int | None) -> str:
    """fingerprint([payee, currency, amount_minor, requested_channel,
    requested_at_us]) (fingerprint.py): the same digest without json.dumps'
    machinery, nor a loop over the values. It is taken for every item
    PostgreSQL stores: json.dumps cost 3 µs, a loop over the values 1.29,
    this 0.86 (sha256 itself ~0.32). The JSON is what json.dumps writes for
    such a list: strings escaped by its own encoder (ensure_ascii=False),
    ints in decimal, None as null."""
    assert type(amount_minor) is int, "an amount is an int (not a bool)"
    at = "null" if requested_at_us is None else int.__repr__(requested_at_us)
    return hashlib.sha256(
        f"[{encode_basestring(payee)},{encode_basestring(currency)},"
        f"{int.__repr__(amount_minor)},{encode_basestring(requested_channel)},{at}]"
        .encode()).hexdigest()
