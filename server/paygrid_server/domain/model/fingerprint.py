"""Request fingerprints: an idempotent replay must carry the very same body."""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring
from typing import Any


def fingerprint(body: Any) -> str:
    """SHA-256 of a canonical JSON form of `body` (lists, dicts, scalars)."""
    canonical = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def flat_fingerprint(*values: str | int | None) -> str:
    """fingerprint(list(values)) for str, int (not bool) and None values,
    the same digest without json.dumps' machinery: it is taken for every
    item of every batch, and this costs a third as much. The JSON is what
    json.dumps writes for such a list: strings escaped by its own encoder
    (ensure_ascii=False), ints in decimal, None as null."""
    parts = []
    for value in values:
        if value is None:
            parts.append("null")
        elif isinstance(value, str):
            parts.append(encode_basestring(value))
        else:
            assert type(value) is int, "only str, int and None have a flat fingerprint"
            parts.append(int.__repr__(value))
    return hashlib.sha256(f"[{','.join(parts)}]".encode()).hexdigest()
